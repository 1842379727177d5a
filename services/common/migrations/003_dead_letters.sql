-- Messages a consumer of this service can never apply (undecodable, breaking their
-- contract, or refused by a domain invariant). The row is written before the record's
-- offset is committed, so a dead letter survives a restart of the broker; an operator
-- lists, reads and redrives them with `payrail dead-letters`.
CREATE TABLE dead_letters (
    dead_letter_id      uuid        PRIMARY KEY,
    consumer            text        NOT NULL,
    source_topic        text        NOT NULL,
    source_partition    integer     NOT NULL,
    source_offset       bigint      NOT NULL,
    message_key         bytea,
    message_id          uuid,
    message_type        text,
    body                bytea       NOT NULL,
    body_sha256         bytea       NOT NULL,
    reason              text        NOT NULL,
    status              text        NOT NULL DEFAULT 'parked',
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now(),
    seen_count          integer     NOT NULL DEFAULT 1,
    redrive_count       integer     NOT NULL DEFAULT 0,
    redriven_at         timestamptz,
    CONSTRAINT dead_letter_status CHECK (status IN ('parked', 'redrive_requested', 'redriven')),
    -- The same body failing again for the same consumer (a redelivery, a republished
    -- history) is one dead letter seen more than once, not a new one.
    CONSTRAINT dead_letter_once_per_body UNIQUE (consumer, body_sha256)
);

CREATE INDEX dead_letters_redrive_requested ON dead_letters (first_seen_at)
    WHERE status = 'redrive_requested';
