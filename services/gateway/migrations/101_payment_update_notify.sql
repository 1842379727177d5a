-- Tell waiting POST /v1/payments requests that a payment's projection changed, instead
-- of having each of them poll the table.
CREATE FUNCTION payments_notify_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{schema}_payment_updates', NEW.payment_id);
    RETURN NULL;
END $$;

CREATE TRIGGER payments_notify_update AFTER INSERT OR UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_notify_update();
