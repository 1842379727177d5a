-- Every webhook event the notifier has seen, with the exact bytes a delivery sends, so an
-- event can be resent, or a time range replayed, to an endpoint created later.
CREATE TABLE webhook_events (
    event_id     uuid        PRIMARY KEY,
    merchant_id  text        NOT NULL,
    event_type   text        NOT NULL,
    body         text        NOT NULL,
    occurred_at  timestamptz NOT NULL
);

CREATE INDEX webhook_events_merchant_time ON webhook_events (merchant_id, occurred_at, event_id);

-- An event's first delivery to an endpoint is unique; a resend or a replay is a new
-- delivery of the same event, with its own attempts.
ALTER TABLE webhook_deliveries
    ADD COLUMN origin text NOT NULL DEFAULT 'event',
    ADD CONSTRAINT webhook_deliveries_origin CHECK (origin IN ('event', 'resend', 'replay')),
    DROP CONSTRAINT webhook_deliveries_one_per_endpoint_and_event;

CREATE UNIQUE INDEX webhook_deliveries_one_per_endpoint_and_event
    ON webhook_deliveries (endpoint_id, event_id) WHERE origin = 'event';

-- The worker claims per endpoint, so a slow endpoint's backlog cannot hide other
-- endpoints' due deliveries.
CREATE INDEX webhook_deliveries_endpoint_due ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_created
    ON webhook_deliveries (endpoint_id, created_at DESC, delivery_id);

-- `failing_since` is the time of the first failed attempt after the last success; an
-- endpoint failing for long enough is disabled, and says why and when.
ALTER TABLE webhook_endpoints
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN disabled_at timestamptz,
    ADD COLUMN disabled_reason text;

-- Events delivered before this table existed can be resent too.
INSERT INTO webhook_events (event_id, merchant_id, event_type, body, occurred_at)
SELECT DISTINCT ON (event_id) event_id, merchant_id, event_type, body,
       to_timestamp((body::jsonb ->> 'created')::bigint)
FROM webhook_deliveries ORDER BY event_id, created_at
ON CONFLICT (event_id) DO NOTHING;
