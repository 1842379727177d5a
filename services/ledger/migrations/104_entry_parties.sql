-- Every merchant whose accounts an entry touches, in the order entries were recorded: a
-- payment shared out in splits touches its recipients too, though the entry belongs to
-- the merchant of record (journal_entries.merchant_id). Balance transactions and
-- settlement find a merchant's entries here. Append-only, like the journal.
CREATE TABLE entry_parties (
    merchant_id  text   NOT NULL,
    seq          bigint NOT NULL,
    entry_id     text   NOT NULL REFERENCES journal_entries (entry_id),
    PRIMARY KEY (merchant_id, seq)
);

INSERT INTO entry_parties (merchant_id, seq, entry_id)
SELECT DISTINCT split_part(p.account_id, ':', 2), e.seq, e.entry_id
FROM postings p JOIN journal_entries e ON e.entry_id = p.entry_id
WHERE p.account_id LIKE 'merchant:%';

CREATE TRIGGER entry_parties_append_only BEFORE UPDATE OR DELETE ON entry_parties
    FOR EACH ROW EXECUTE FUNCTION journal_append_only();
CREATE TRIGGER entry_parties_no_truncate BEFORE TRUNCATE ON entry_parties
    FOR EACH STATEMENT EXECUTE FUNCTION journal_append_only();

-- A shared payment is settled once for each merchant it pays: a settlement line is one
-- entry's posting on one merchant's pending account.
ALTER TABLE settlement_lines ADD COLUMN account_id text;
UPDATE settlement_lines l SET account_id = 'merchant:' || b.merchant_id || ':pending'
FROM settlement_batches b WHERE b.batch_id = l.batch_id;
ALTER TABLE settlement_lines
    ALTER COLUMN account_id SET NOT NULL,
    DROP CONSTRAINT settlement_lines_entry_id_key,
    ADD CONSTRAINT settlement_lines_entry_account UNIQUE (entry_id, account_id);
