-- The broker cluster the relay last published to. A memory-only broker gets a new cluster
-- id at every start and has lost every record; when the relay finds an id other than
-- this one it marks the whole event store unpublished and publishes it again, so the
-- broker's history can always be rebuilt from the store. One row per schema; a null id
-- means the relay has not published to a known cluster yet.
CREATE TABLE relay_broker_identity (
    only_row    boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    cluster_id  text        CHECK (cluster_id <> ''),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO relay_broker_identity (cluster_id) VALUES (NULL);

-- A transaction that sent NOTIFY takes one server-wide lock while it commits, so a NOTIFY
-- per insert serialised the commits of every writer. A writer now wakes the relay of its
-- own process after its commit, and the relay polls for writers in other processes.
DROP TRIGGER event_store_notify ON event_store;
DROP FUNCTION event_store_notify();
