-- What monitoring watches after the fact: finished payments and succeeded refunds (once
-- each), and the alerts raised (at most one per kind and subject per cooldown).
CREATE TABLE payment_outcomes (
    payment_id    text PRIMARY KEY,
    merchant_id   text NOT NULL,
    channel       text NOT NULL,
    payer_id      text,
    succeeded     boolean NOT NULL,
    -- False for payments risk declined: they never reached the channel.
    at_channel    boolean NOT NULL,
    finished_at   timestamptz NOT NULL
);
CREATE INDEX payment_outcomes_channel ON payment_outcomes (channel, finished_at DESC)
    WHERE at_channel;
CREATE INDEX payment_outcomes_merchant ON payment_outcomes (merchant_id, finished_at);
CREATE INDEX payment_outcomes_payer ON payment_outcomes (payer_id, finished_at);

CREATE TABLE refund_outcomes (
    refund_id     text PRIMARY KEY,
    merchant_id   text NOT NULL,
    succeeded_at  timestamptz NOT NULL
);
CREATE INDEX refund_outcomes_merchant ON refund_outcomes (merchant_id, succeeded_at);

CREATE TABLE risk_alerts (
    alert_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL,
    subject     text NOT NULL,
    message     text NOT NULL,
    raised_at   timestamptz NOT NULL
);
CREATE INDEX risk_alerts_subject ON risk_alerts (kind, subject, raised_at DESC);
