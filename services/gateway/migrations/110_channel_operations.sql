-- The connector's work queue: every call payrail owes a channel or the bank rail, kept
-- until the channel has given a definite answer. A command from the bus becomes a row
-- here in the consumer's transaction; a lane of the rail calls the channel outside any
-- transaction and records the answer together with closing the row.
CREATE TABLE channel_operations (
    kind text NOT NULL,               -- submit_payment, close_trade, query_payment,
                                      -- submit_refund, query_refund, submit_payout
    subject_id text NOT NULL,         -- the payment, refund or payout id: the channel's
                                      -- idempotency key
    rail text NOT NULL,               -- alipay, wechat_pay, card or bank
    payment_id text NOT NULL,         -- the payment (or payout) the subject belongs to
    command_topic text NOT NULL,
    command_body text NOT NULL,       -- the command, as it arrived
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'unknown', 'done')),
    -- Calls made so far. A call that got no definite answer may have reached the channel,
    -- so an operation with attempts > 0 is never refused by the circuit breaker.
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    leased_until timestamptz,         -- a lane is calling it; another may take it after
    created_at timestamptz NOT NULL,
    first_attempt_at timestamptz,
    finished_at timestamptz,
    last_error text,
    alerted_at timestamptz,           -- operations were told it stays unknown
    PRIMARY KEY (kind, subject_id)
);

CREATE INDEX channel_operations_due ON channel_operations (rail, next_attempt_at)
    WHERE status <> 'done';
CREATE INDEX channel_operations_payment ON channel_operations (payment_id)
    WHERE status <> 'done';

-- Each rail's circuit as the connector last saw it, for the gateway's routing of new
-- payments (a channel whose circuit is open is skipped).
CREATE TABLE channel_health (
    rail text PRIMARY KEY,
    open_until timestamptz,
    updated_at timestamptz NOT NULL
);
