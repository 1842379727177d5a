-- A recording sequence for journal entries, so that a merchant's balance transactions can be
-- listed newest first and paged by a keyset (seq, line) that never shifts: occurred_at ties
-- (one event's time is shared by many entries) and entry ids are hashes, neither orders.
--
-- Adding an identity column rewrites the table and numbers the existing rows in their
-- physical order, which in a table that is never updated or deleted from is the order they
-- were inserted. The rewrite is not an UPDATE: the append-only row triggers do not fire, and
-- they keep refusing any later change, to `seq` as to every other column. GENERATED ALWAYS
-- refuses a caller-chosen value, so only the sequence numbers entries.
--
-- The number is taken when an entry is inserted, not when it commits: an entry may become
-- visible after one with a higher number. A newest-first listing pages downwards, so such a
-- late entry is simply new to a reader already past it, as any entry posted during the walk.
ALTER TABLE journal_entries ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;

ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_seq_unique UNIQUE (seq);

-- A merchant's entries newest first: the access path of the balance transactions listing.
CREATE INDEX journal_entries_merchant_seq ON journal_entries (merchant_id, seq);
