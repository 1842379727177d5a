-- Payouts as merchants read them, projected from the ledger's PayoutCreated, PayoutPaid
-- and PayoutFailed.
CREATE TABLE payouts (
    payout_id       text PRIMARY KEY,
    merchant_id     text NOT NULL,
    currency        text NOT NULL,
    amount_minor    bigint NOT NULL,
    payout_date     date NOT NULL,
    status          text NOT NULL,
    bank_reference  text,
    failure         jsonb,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX payouts_listing ON payouts (merchant_id, created_at DESC, payout_id DESC);

-- Payouts the gateway sent to the bank rail, so the rail's notification names its merchant.
CREATE TABLE bank_payouts (
    payout_id       text PRIMARY KEY,
    merchant_id     text NOT NULL,
    bank_reference  text NOT NULL,
    sent_at         timestamptz NOT NULL
);
