"""The notifier: merchants' webhook endpoints and signed deliveries with a retry schedule.

It consumes the payment events merchants may subscribe to and, in the same transaction as
the inbox row, records one pending delivery per subscribed endpoint. A background worker
sends due deliveries over HTTP, records every attempt and retries on a persisted schedule.
"""
