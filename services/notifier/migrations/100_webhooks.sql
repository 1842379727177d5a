-- Webhook endpoints, their deliveries and every attempt to deliver them.

-- One row per URL a merchant registered. The secret is kept readable because every
-- delivery is signed with it (HMAC needs the key itself, a hash would not do).
CREATE TABLE webhook_endpoints (
    endpoint_id  text        PRIMARY KEY,
    merchant_id  text        NOT NULL,
    url          text        NOT NULL,
    events       text[]      NOT NULL,
    secret       text        NOT NULL,
    enabled      boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL,
    CONSTRAINT webhook_endpoints_events_not_empty CHECK (cardinality(events) >= 1),
    CONSTRAINT webhook_endpoints_url_length CHECK (char_length(url) <= 2048)
);

CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id, created_at);

-- One row per (endpoint, event): written in the same transaction as the consumer's inbox
-- row, and unique, so a redelivered event can never create a second delivery. `body` holds
-- the exact bytes every attempt sends. A pending delivery is due at `next_attempt_at`;
-- a worker that claims it pushes `next_attempt_at` forward as a lease.
CREATE TABLE webhook_deliveries (
    delivery_id      text        PRIMARY KEY,
    endpoint_id      text        NOT NULL REFERENCES webhook_endpoints (endpoint_id),
    merchant_id      text        NOT NULL,
    event_id         uuid        NOT NULL,
    event_type       text        NOT NULL,
    body             text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending',
    attempt_count    integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    CONSTRAINT webhook_deliveries_one_per_endpoint_and_event UNIQUE (endpoint_id, event_id),
    CONSTRAINT webhook_deliveries_status
        CHECK (status IN ('pending', 'succeeded', 'failed')),
    CONSTRAINT webhook_deliveries_attempt_count_not_negative CHECK (attempt_count >= 0),
    -- Only a pending delivery is scheduled; only a succeeded one has been delivered.
    CONSTRAINT webhook_deliveries_scheduled_when_pending
        CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CONSTRAINT webhook_deliveries_delivered_when_succeeded
        CHECK ((status = 'succeeded') = (delivered_at IS NOT NULL))
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_merchant_event ON webhook_deliveries (merchant_id, event_id);

-- The delivery log: one row per HTTP attempt, whatever its outcome. `status_code` is null
-- when no response arrived (timeout, connection refused); `error` then says why.
CREATE TABLE webhook_attempts (
    delivery_id       text        NOT NULL REFERENCES webhook_deliveries (delivery_id),
    attempt_number    integer     NOT NULL,
    attempted_at      timestamptz NOT NULL,
    succeeded         boolean     NOT NULL,
    status_code       integer,
    latency_ms        integer     NOT NULL,
    error             text,
    response_excerpt  text,
    PRIMARY KEY (delivery_id, attempt_number),
    CONSTRAINT webhook_attempts_number_positive CHECK (attempt_number >= 1),
    CONSTRAINT webhook_attempts_latency_not_negative CHECK (latency_ms >= 0),
    CONSTRAINT webhook_attempts_status_code_range
        CHECK (status_code IS NULL OR status_code BETWEEN 100 AND 599)
);
