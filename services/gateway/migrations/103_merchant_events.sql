-- Public events as merchants see them (GET /v1/events), projected from the bus.
CREATE TABLE merchant_events (
    event_id     uuid PRIMARY KEY,
    merchant_id  text NOT NULL,
    type         text NOT NULL,
    created_at   timestamptz NOT NULL,
    document     jsonb NOT NULL
);
CREATE INDEX merchant_events_listing ON merchant_events (merchant_id, created_at DESC, event_id DESC);
CREATE INDEX payments_listing ON payments (merchant_id, created_at DESC, payment_id DESC);
