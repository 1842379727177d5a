-- Requests waiting for a payment are woken by the gateway's consumer after each batch it
-- commits (in-process, plus one NOTIFY per batch for other gateway instances), instead of
-- a NOTIFY per changed row: NOTIFY takes a cluster-wide lock at commit, which serialised
-- every projection commit.
DROP TRIGGER payments_notify_update ON payments;
DROP FUNCTION payments_notify_update();
DROP TRIGGER refunds_notify_update ON refunds;
DROP FUNCTION refunds_notify_update();
