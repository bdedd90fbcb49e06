"""Delivery: result objects, webhooks and uploadEndpoint PUTs."""
