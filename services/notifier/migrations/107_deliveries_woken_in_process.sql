-- The delivery worker is woken in its own process after the consumer's batch (or a
-- resend or replay) commits, and other notifier processes find queued deliveries by
-- polling: a NOTIFY per commit took a cluster-wide lock at every commit that queued a
-- webhook.
DROP TRIGGER webhook_deliveries_notify ON webhook_deliveries;
DROP FUNCTION webhook_deliveries_notify();
