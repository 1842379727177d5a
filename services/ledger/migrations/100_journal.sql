-- The double-entry journal. Entries and their postings are append-only: a correction is a
-- reversing entry, never an edit. Debits are positive, credits negative; every entry sums
-- to zero per currency, checked by the service before writing and by the database at commit.
CREATE TABLE journal_entries (
    entry_id         text        PRIMARY KEY,
    -- One entry per source event: a replayed or redelivered event cannot post twice.
    source_event_id  uuid        NOT NULL UNIQUE,
    kind             text        NOT NULL CHECK (kind <> ''),
    merchant_id      text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX journal_entries_merchant ON journal_entries (merchant_id, occurred_at);

CREATE TABLE postings (
    entry_id      text     NOT NULL REFERENCES journal_entries (entry_id),
    line          smallint NOT NULL CHECK (line >= 1),
    account_id    text     NOT NULL CHECK (account_id <> ''),
    currency      char(3)  NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount_minor  bigint   NOT NULL CHECK (amount_minor <> 0),
    PRIMARY KEY (entry_id, line)
);

CREATE INDEX postings_account ON postings (account_id, currency);

-- Running balance per account and currency, the sum of its postings. Changed only by an
-- atomic INSERT ... ON CONFLICT DO UPDATE in the transaction that writes the postings.
CREATE TABLE account_balances (
    account_id     text    NOT NULL,
    currency       char(3) NOT NULL,
    balance_minor  bigint  NOT NULL,
    PRIMARY KEY (account_id, currency)
);

-- Append-only: journal rows are never updated, deleted or truncated.
CREATE FUNCTION journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Post a reversing journal entry instead.';
END $$;

CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION journal_append_only();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION journal_append_only();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION journal_append_only();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION journal_append_only();

-- Balance enforced in the database as well as in the service: at commit, every entry that
-- received postings in the transaction must sum to zero in each currency and have at
-- least two postings. Deferred, so the lines of one entry can be inserted one by one.
-- Names are schema-qualified so the check does not depend on the session's search_path.
CREATE FUNCTION journal_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced  record;
    line_count  integer;
BEGIN
    SELECT count(*) INTO line_count FROM {schema}.postings WHERE entry_id = NEW.entry_id;
    IF line_count < 2 THEN
        RAISE EXCEPTION 'journal entry % has % posting(s); two or more are required',
            NEW.entry_id, line_count
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT currency, sum(amount_minor) AS total_minor INTO unbalanced
        FROM {schema}.postings
        WHERE entry_id = NEW.entry_id
        GROUP BY currency
        HAVING sum(amount_minor) <> 0
        ORDER BY currency
        LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance: % postings sum to %',
            NEW.entry_id, unbalanced.currency, unbalanced.total_minor
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION journal_entry_balanced();

-- An entry inserted without any postings is caught by the same check.
CREATE CONSTRAINT TRIGGER journal_entries_have_postings AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION journal_entry_balanced();
