"""The PSP simulator's bank rail: credit transfers to merchants' bank accounts.

See `services.gateway.channels.bank_protocol` for the wire protocol. A payout accepted
now is paid `payout_processing_ms` later, or failed (`account_closed`) when the bank
rail's `fail_payouts` fault was set when it was accepted; the final status is then
notified, signed, on the shared sender's retry schedule. The `lose_notifications` and
`duplicate_notifications` faults apply as for the channels.
"""

from services.psp_simulator.bank.routes import create_router

__all__ = ["create_router"]
