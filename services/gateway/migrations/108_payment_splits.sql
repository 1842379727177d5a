-- The shares of a payment for other merchants, shown back on every read.
ALTER TABLE payments ADD COLUMN splits jsonb NOT NULL DEFAULT '[]'::jsonb;
