-- Refunds as merchants read them, projected from payments.events; a refused request is
-- kept too, so the request that asked for it can be answered.
CREATE TABLE refunds (
    refund_id          text PRIMARY KEY,
    payment_id         text NOT NULL,
    merchant_id        text NOT NULL,
    amount_minor       bigint CHECK (amount_minor > 0),
    currency           text NOT NULL,
    channel            text NOT NULL,
    reason             text NOT NULL,
    initiator          text NOT NULL,
    status             text NOT NULL,
    failure            jsonb,
    channel_refund_id  text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id, created_at);

ALTER TABLE payments ADD COLUMN amount_refunded_minor bigint NOT NULL DEFAULT 0
    CHECK (amount_refunded_minor >= 0 AND amount_refunded_minor <= amount_minor);

-- Requests waiting for a refund's outcome listen on the payment's channel as well.
CREATE FUNCTION refunds_notify_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{schema}_payment_updates', NEW.payment_id);
    RETURN NULL;
END $$;

CREATE TRIGGER refunds_notify_update AFTER INSERT OR UPDATE ON refunds
    FOR EACH ROW EXECUTE FUNCTION refunds_notify_update();

-- An Idempotency-Key may name a payment or a refund.
ALTER TABLE idempotency_keys RENAME COLUMN payment_id TO resource_id;

-- The merchant's own notes on a payment and when it expires, shown back on every read.
ALTER TABLE payments ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE payments ADD COLUMN expires_at timestamptz;
