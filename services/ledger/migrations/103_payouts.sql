-- Payouts: available funds sent to a merchant's bank account. One payout per merchant,
-- currency and run day; its status changes once, from in_transit to paid or failed.
ALTER TABLE merchant_terms ADD COLUMN payout_minimum_minor bigint NOT NULL DEFAULT 100
    CHECK (payout_minimum_minor >= 1);

CREATE TABLE payouts (
    payout_id       text PRIMARY KEY,
    merchant_id     text NOT NULL,
    currency        char(3) NOT NULL,
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    payout_date     date NOT NULL,
    status          text NOT NULL CHECK (status IN ('in_transit', 'paid', 'failed')),
    bank_reference  text,
    failure         jsonb,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    UNIQUE (merchant_id, currency, payout_date)
);
