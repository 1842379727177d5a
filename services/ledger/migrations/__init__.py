"""SQL migrations of the ledger's own schema, numbered from 100."""
