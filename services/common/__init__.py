"""Shared runtime for every payrail service.

Settings, logging, broker and database plumbing, the outbox relay and the idempotent
inbox consumer live here. Business rules never do.
"""
