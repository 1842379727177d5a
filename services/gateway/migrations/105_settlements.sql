-- Settlement batches as merchants read them, projected from the ledger's SettlementCreated.
CREATE TABLE settlements (
    batch_id         text PRIMARY KEY,
    merchant_id      text NOT NULL,
    currency         text NOT NULL,
    settlement_date  date NOT NULL,
    net_minor        bigint NOT NULL,
    lines            jsonb NOT NULL,
    created_at       timestamptz NOT NULL
);
CREATE INDEX settlements_merchant ON settlements (merchant_id, created_at DESC, batch_id);
