-- The event store doubles as the outbox: a state change and the messages it produces
-- are written in one transaction; the relay publishes rows whose published_at is null.
CREATE TABLE event_store (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      uuid        NOT NULL UNIQUE,
    message_type    text        NOT NULL,
    topic           text        NOT NULL,
    message_key     text        NOT NULL,
    stream_id       text,
    stream_version  integer,
    merchant_id     text        NOT NULL,
    correlation_id  text        NOT NULL,
    body            jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    CONSTRAINT stream_fields_together CHECK ((stream_id IS NULL) = (stream_version IS NULL)),
    CONSTRAINT stream_version_positive CHECK (stream_version IS NULL OR stream_version >= 1),
    -- Optimistic concurrency: two writers appending the same version cannot both commit.
    CONSTRAINT stream_version_unique UNIQUE (stream_id, stream_version)
);

CREATE INDEX event_store_unpublished ON event_store (position) WHERE published_at IS NULL;
CREATE INDEX event_store_merchant ON event_store (merchant_id, position);

-- Events are immutable: only the relay's published_at mark may change, and nothing is deleted.
CREATE FUNCTION event_store_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'event_store rows are never deleted';
    END IF;
    IF (NEW.message_id, NEW.message_type, NEW.topic, NEW.message_key, NEW.stream_id,
        NEW.stream_version, NEW.merchant_id, NEW.correlation_id, NEW.body, NEW.recorded_at)
       IS DISTINCT FROM
       (OLD.message_id, OLD.message_type, OLD.topic, OLD.message_key, OLD.stream_id,
        OLD.stream_version, OLD.merchant_id, OLD.correlation_id, OLD.body, OLD.recorded_at) THEN
        RAISE EXCEPTION 'event_store rows are immutable';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER event_store_immutable BEFORE UPDATE OR DELETE ON event_store
    FOR EACH ROW EXECUTE FUNCTION event_store_immutable();

-- Wake the relay as soon as a transaction that wrote messages commits.
CREATE FUNCTION event_store_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{schema}_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER event_store_notify AFTER INSERT ON event_store
    FOR EACH STATEMENT EXECUTE FUNCTION event_store_notify();

-- The inbox: one row per message a consumer has applied, written in the same
-- transaction as the effect, so a redelivered message changes nothing.
CREATE TABLE inbox (
    consumer      text        NOT NULL,
    message_id    uuid        NOT NULL,
    topic         text        NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
