-- The risk service's state, rebuilt from nothing but its own decisions and settings:
-- each merchant's rules, the block list, every payment it decided (what the limits,
-- windows and anomaly scores count), and the payments held for review.
CREATE TABLE risk_rules (
    merchant_id  text PRIMARY KEY,
    rules        jsonb NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE TABLE blocklist (
    key         text NOT NULL,
    value       text NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (key, value)
);

-- One row per payment decided: a redelivered payment is never counted twice.
CREATE TABLE payment_observations (
    payment_id        text PRIMARY KEY,
    merchant_id       text NOT NULL,
    payer_id          text,
    ip                text,
    device_id         text,
    card_fingerprint  text,
    amount_minor      bigint NOT NULL,
    currency          char(3) NOT NULL,
    outcome           text NOT NULL,
    observed_at       timestamptz NOT NULL
);
CREATE INDEX payment_observations_merchant ON payment_observations (merchant_id, observed_at);
CREATE INDEX payment_observations_payer ON payment_observations (payer_id, observed_at);
CREATE INDEX payment_observations_ip ON payment_observations (ip, observed_at);
CREATE INDEX payment_observations_device ON payment_observations (device_id, observed_at);
CREATE INDEX payment_observations_card ON payment_observations (card_fingerprint, observed_at);

CREATE TABLE risk_reviews (
    payment_id   text PRIMARY KEY,
    merchant_id  text NOT NULL,
    amount_minor bigint NOT NULL,
    currency     char(3) NOT NULL,
    score        integer NOT NULL,
    fired_rules  jsonb NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'closed')),
    reviewed_by  text,
    created_at   timestamptz NOT NULL,
    resolved_at  timestamptz
);
CREATE INDEX risk_reviews_pending ON risk_reviews (status, created_at);
