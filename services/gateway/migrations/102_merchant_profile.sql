-- A merchant's configuration is one profile document, the same shape as the payload of
-- its MerchantOnboarded / MerchantUpdated events.
ALTER TABLE merchants ADD COLUMN profile jsonb;
UPDATE merchants SET profile = jsonb_build_object(
    'name', name,
    'status', status,
    'channels', to_jsonb(channels),
    'fee_plans', fee_plans,
    'single_payment_limit_minor', single_payment_limit_minor,
    'settlement_terms', '{"delay_days": 1, "cutoff_time": "00:00", "time_zone": "UTC"}'::jsonb,
    'payment_expiry_minutes', 30
);
ALTER TABLE merchants
    ALTER COLUMN profile SET NOT NULL,
    DROP COLUMN name,
    DROP COLUMN channels,
    DROP COLUMN fee_plans,
    DROP COLUMN single_payment_limit_minor,
    DROP COLUMN status,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- A revoked key stops working at revoked_at, which a rotation may set in the future so
-- clients can switch keys without downtime.
CREATE INDEX api_keys_merchant ON api_keys (merchant_id, created_at);
