-- Automatic refunds (a late payment, a cancelled order) the channel refused: each waits
-- here for its next attempt, and stays as 'exhausted' for operations once its attempts are
-- used up. `attempt` is the attempt that failed (1 for the first).
CREATE TABLE refund_retries (
    payment_id text NOT NULL,
    refund_id text NOT NULL,
    attempt integer NOT NULL CHECK (attempt >= 1),
    failed_at timestamptz NOT NULL,
    failure_code text NOT NULL,
    status text NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'exhausted')),
    PRIMARY KEY (payment_id, refund_id)
);

CREATE INDEX refund_retries_waiting ON refund_retries (failed_at) WHERE status = 'waiting';
