"""Push and webhooks: signing secrets, safe addresses, event payloads, delivery, the worker."""
