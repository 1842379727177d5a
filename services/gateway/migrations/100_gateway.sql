CREATE TABLE merchants (
    merchant_id                 text PRIMARY KEY,
    name                        text NOT NULL,
    channels                    text[] NOT NULL,
    fee_plans                   jsonb NOT NULL,
    single_payment_limit_minor  bigint,
    status                      text NOT NULL DEFAULT 'active',
    created_at                  timestamptz NOT NULL DEFAULT now()
);

-- API key secrets are stored only as SHA-256 hashes: a leaked table reveals no key.
-- The secrets are 190-bit random strings, so a slow password hash adds nothing.
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    merchant_id  text NOT NULL REFERENCES merchants,
    prefix       text NOT NULL,
    secret_hash  bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE idempotency_keys (
    merchant_id      text NOT NULL,
    idempotency_key  text NOT NULL,
    request_hash     bytea NOT NULL,
    payment_id       text NOT NULL,
    response_status  integer,
    response_body    jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, idempotency_key)
);

-- Read projections, rebuilt from payments.events and ledger.events.
CREATE TABLE payments (
    payment_id     text PRIMARY KEY,
    merchant_id    text NOT NULL,
    order_id       text NOT NULL,
    amount_minor   bigint NOT NULL,
    currency       char(3) NOT NULL,
    channel        text NOT NULL,
    description    text NOT NULL,
    status         text NOT NULL,
    next_action    jsonb,
    failure        jsonb,
    version        integer NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX payments_merchant ON payments (merchant_id, created_at DESC);

CREATE TABLE payment_timeline (
    event_id           uuid PRIMARY KEY,
    payment_id         text NOT NULL,
    event_type         text NOT NULL,
    aggregate_version  integer NOT NULL,
    occurred_at        timestamptz NOT NULL,
    data               jsonb NOT NULL
);
CREATE INDEX payment_timeline_payment ON payment_timeline (payment_id, aggregate_version);

CREATE TABLE balances (
    merchant_id   text NOT NULL,
    currency      char(3) NOT NULL,
    bucket        text NOT NULL,
    amount_minor  bigint NOT NULL,
    PRIMARY KEY (merchant_id, currency, bucket)
);

-- Channel notifications already turned into events: a replayed notification is a no-op.
CREATE TABLE channel_notifications (
    notification_id  text NOT NULL,
    channel          text NOT NULL,
    payment_id       text NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, notification_id)
);
