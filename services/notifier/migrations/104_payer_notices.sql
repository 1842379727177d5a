-- Payer notices: who pays for each payment (when the merchant named a payer), and the
-- payment confirmations and refund notices owed to payers, each sent at least once.

-- Filled from PaymentCreated; holds the merchant's payer id only, no contact details.
CREATE TABLE payment_payers (
    payment_id   text        PRIMARY KEY,
    merchant_id  text        NOT NULL,
    payer_id     text        NOT NULL,
    recorded_at  timestamptz NOT NULL
);

-- One notice per event (the unique event id): queued in the consumer's inbox
-- transaction. A pending notice is due at `next_attempt_at`; a worker that claims it
-- pushes `next_attempt_at` forward as a lease.
CREATE TABLE payer_notices (
    notice_id        text        PRIMARY KEY,
    event_id         uuid        NOT NULL UNIQUE,
    kind             text        NOT NULL,
    merchant_id      text        NOT NULL,
    payer_id         text        NOT NULL,
    payment_id       text        NOT NULL,
    order_id         text        NOT NULL,
    refund_id        text,
    amount_minor     bigint      NOT NULL,
    currency         text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    status           text        NOT NULL DEFAULT 'pending',
    attempt_count    integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL,
    sent_at          timestamptz,
    CONSTRAINT payer_notices_kind CHECK (kind IN ('payment_confirmation', 'refund_notice')),
    CONSTRAINT payer_notices_status CHECK (status IN ('pending', 'sent', 'failed')),
    CONSTRAINT payer_notices_refund CHECK ((kind = 'refund_notice') = (refund_id IS NOT NULL)),
    CONSTRAINT payer_notices_due CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CONSTRAINT payer_notices_amount CHECK (amount_minor > 0)
);

CREATE INDEX payer_notices_pending_due ON payer_notices (next_attempt_at) WHERE status = 'pending';
CREATE INDEX payer_notices_payment ON payer_notices (payment_id);
