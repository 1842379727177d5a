-- The fee the ledger charged on each succeeded payment, projected from its
-- `payment_succeeded` JournalEntryPosted. A table of its own rather than a column of
-- `payments`: ledger.events and payments.events are different topics, so the fee may
-- arrive before the payment's row exists, and an insert keyed by the payment cannot miss
-- where an UPDATE of a row not there yet would. Reports join it to `payments`.
CREATE TABLE payment_fees (
    payment_id  text PRIMARY KEY,
    entry_id    text NOT NULL,
    currency    char(3) NOT NULL,
    fee_minor   bigint NOT NULL CHECK (fee_minor >= 0),
    posted_at   timestamptz NOT NULL
);

-- Reports select the payments created in a UTC day or month, across every merchant.
CREATE INDEX payments_created_at ON payments (created_at);
