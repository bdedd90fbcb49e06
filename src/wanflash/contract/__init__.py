"""The wire contract: Runware's ``videoInference`` request/result models, validation and pricing.

Shared by every layer that speaks the wire — the API transports, the worker and ``wanflash generate`` — so none of
them imports another's transport. Imports only pydantic, :mod:`wanflash.errors` and :mod:`wanflash.jobs.model`;
never torch.
"""
