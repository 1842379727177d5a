-- A rotated secret keeps signing next to the new one until it expires, so receivers can
-- switch without missing a delivery. A deleted endpoint is kept (its deliveries and
-- attempts are the merchant's history) but no longer listed or sent to.
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD COLUMN deleted_at timestamptz;
