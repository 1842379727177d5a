-- Open payments with an expiry time, kept in the same transaction as their events, so
-- the expiry worker finds due payments with one indexed query.
CREATE TABLE payment_deadlines (
    payment_id  text PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX payment_deadlines_due ON payment_deadlines (expires_at);
