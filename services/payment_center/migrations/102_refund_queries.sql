-- The stuck-result check covers refunds too: one row per payment still waiting for the
-- payer (refund_id '') and per refund still waiting for the channel's result.
ALTER TABLE channel_queries DROP CONSTRAINT channel_queries_pkey;
ALTER TABLE channel_queries ADD COLUMN refund_id text NOT NULL DEFAULT '';
ALTER TABLE channel_queries ADD PRIMARY KEY (payment_id, refund_id);
