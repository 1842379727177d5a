-- Manual adjustments of merchants' available balances by operations. One adjustment per
-- merchant reference (a retried request posts once); an adjustment is reversed at most
-- once, by another adjustment that names it.
CREATE TABLE adjustments (
    adjustment_id  text PRIMARY KEY,
    merchant_id    text NOT NULL,
    reference      text NOT NULL,
    currency       char(3) NOT NULL,
    amount_minor   bigint NOT NULL CHECK (amount_minor <> 0),
    reason         text NOT NULL,
    reverses       text UNIQUE REFERENCES adjustments (adjustment_id),
    created_at     timestamptz NOT NULL,
    UNIQUE (merchant_id, reference)
);
