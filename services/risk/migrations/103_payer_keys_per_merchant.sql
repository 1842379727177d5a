-- A payer's values (id, IP, device, card fingerprint) are the merchant's own: risk counts
-- them within the merchant, so the indexes lead with the merchant. The block
-- list is platform-wide and keeps its own key.
DROP INDEX payment_observations_payer;
DROP INDEX payment_observations_ip;
DROP INDEX payment_observations_device;
DROP INDEX payment_observations_card;
CREATE INDEX payment_observations_payer
    ON payment_observations (merchant_id, payer_id, observed_at);
CREATE INDEX payment_observations_ip ON payment_observations (merchant_id, ip, observed_at);
CREATE INDEX payment_observations_device
    ON payment_observations (merchant_id, device_id, observed_at);
CREATE INDEX payment_observations_card
    ON payment_observations (merchant_id, card_fingerprint, observed_at);

DROP INDEX payment_outcomes_payer;
CREATE INDEX payment_outcomes_payer ON payment_outcomes (merchant_id, payer_id, finished_at);

-- Rules stored before amount limits were per currency are read through the same upcast
-- as their events (schemas.risk.upcast_rules_v1_v2); they are not rewritten here.
