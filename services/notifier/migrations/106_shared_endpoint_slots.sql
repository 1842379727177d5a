-- A delivery being attempted carries the end of its lease, so every notifier process
-- counts the same attempts in flight per endpoint: webhook_endpoint_concurrency_max holds
-- across processes, not once per process. The lease ends when the attempt is recorded,
-- or by itself when the worker that held it died.
ALTER TABLE webhook_deliveries ADD COLUMN leased_until timestamptz;

CREATE INDEX webhook_deliveries_endpoint_leased
    ON webhook_deliveries (endpoint_id, leased_until)
    WHERE status = 'pending' AND leased_until IS NOT NULL;
