"""Policies as plain objects: limits and their storage, the response cache, variant
choice, the circuit breaker, metrics and dashboard statistics. Nothing here knows ASGI
or the gateway; the middleware (and, later, other protocols) call into it."""
