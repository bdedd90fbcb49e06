"""Outbound HTTP: the SSRF-guarded client used for input URLs, webhooks and upload endpoints.

Every request this service makes to a caller-supplied URL goes through :mod:`wanflash.net.ssrf` (public addresses only,
pinned resolution, checked redirects, size and time caps). Imports httpx only; never torch.
"""
