"""The ledger: a double-entry journal and account balances projected from payment events.

Every successful payment becomes one balanced journal entry; balances are the running sums
of the entries' postings. The journal is append-only: a correction is a reversing entry.
"""
