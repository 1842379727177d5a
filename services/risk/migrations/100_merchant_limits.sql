-- The risk service's own projection of merchant onboarding facts.
CREATE TABLE merchant_limits (
    merchant_id                 text PRIMARY KEY,
    single_payment_limit_minor  bigint CHECK (single_payment_limit_minor > 0),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
