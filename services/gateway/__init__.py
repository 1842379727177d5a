"""gateway: the public HTTP API, API keys, idempotency, channel adapters and callbacks,
and the read projections that serve API queries."""
