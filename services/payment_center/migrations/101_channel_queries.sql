-- Payments waiting for the payer, with when to ask the channel next if no notification
-- arrives: the stuck-payment check. Kept in the same transaction as the events.
CREATE TABLE channel_queries (
    payment_id     text PRIMARY KEY,
    channel        text NOT NULL,
    due_at         timestamptz NOT NULL,
    query_count    integer NOT NULL DEFAULT 0 CHECK (query_count >= 0)
);
CREATE INDEX channel_queries_due ON channel_queries (due_at);
