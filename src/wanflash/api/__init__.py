"""The API side: Runware wire protocol, validation, transports. Never imports torch."""
