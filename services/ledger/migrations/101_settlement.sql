-- Settlement: each merchant's terms (from merchants.events), and the batches that moved
-- funds from pending to available, one per merchant, currency and settlement day. A
-- journal entry is settled at most once (the unique entry_id of settlement_lines).
CREATE TABLE merchant_terms (
    merchant_id   text PRIMARY KEY,
    delay_days    integer NOT NULL CHECK (delay_days >= 0),
    cutoff_time   text NOT NULL,
    time_zone     text NOT NULL
);

CREATE TABLE settlement_batches (
    batch_id         text PRIMARY KEY,
    merchant_id      text NOT NULL,
    currency         char(3) NOT NULL,
    settlement_date  date NOT NULL,
    net_minor        bigint NOT NULL,
    -- NULL when the lines net to zero: nothing moves, the lines are still settled.
    entry_id         text,
    created_at       timestamptz NOT NULL,
    UNIQUE (merchant_id, currency, settlement_date)
);

CREATE TABLE settlement_lines (
    batch_id             text NOT NULL REFERENCES settlement_batches (batch_id),
    entry_id             text NOT NULL UNIQUE,
    kind                 text NOT NULL,
    source_event_id      text NOT NULL,
    amount_minor         bigint NOT NULL
);
CREATE INDEX settlement_lines_batch ON settlement_lines (batch_id);
