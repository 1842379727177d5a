-- The balance check ran once per posting and once per entry, each time re-reading the
-- entry's postings: most of the cost of posting a batch of entries. It now runs once per
-- INSERT statement on postings, for every entry that statement touched, set-wise; and
-- at commit each new entry is checked to have postings at all (one index probe).
--
-- Together they keep the rule: postings are append-only, so an entry's postings change
-- only by INSERT, and every INSERT leaves each entry it touched with two or more
-- postings that sum to zero per currency. An entry with any postings is therefore
-- balanced; the deferred check refuses one with none.
DROP TRIGGER postings_balanced ON postings;
DROP TRIGGER journal_entries_have_postings ON journal_entries;

CREATE FUNCTION postings_balanced_per_statement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    failing  record;
BEGIN
    SELECT p.entry_id, p.currency, count(*) AS line_count, sum(p.amount_minor) AS total_minor,
           (SELECT count(*) FROM {schema}.postings q WHERE q.entry_id = p.entry_id)
               AS entry_line_count
        INTO failing
        FROM {schema}.postings p
        WHERE p.entry_id IN (SELECT DISTINCT entry_id FROM inserted)
        GROUP BY p.entry_id, p.currency
        HAVING sum(p.amount_minor) <> 0
            OR (SELECT count(*) FROM {schema}.postings q WHERE q.entry_id = p.entry_id) < 2
        ORDER BY p.entry_id, p.currency
        LIMIT 1;
    IF FOUND THEN
        IF failing.entry_line_count < 2 THEN
            RAISE EXCEPTION 'journal entry % has % posting(s); two or more are required',
                failing.entry_id, failing.entry_line_count
                USING ERRCODE = 'check_violation';
        END IF;
        RAISE EXCEPTION 'journal entry % does not balance: % postings sum to %',
            failing.entry_id, failing.currency, failing.total_minor
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER postings_balanced AFTER INSERT ON postings
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION postings_balanced_per_statement();

CREATE FUNCTION journal_entry_has_postings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM {schema}.postings WHERE entry_id = NEW.entry_id LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'journal entry % has 0 posting(s); two or more are required',
            NEW.entry_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER journal_entries_have_postings AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION journal_entry_has_postings();
