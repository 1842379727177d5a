"""Settlement statements as merchants download them: one CSV format, rendered from the
settlement contract by the ledger and the gateway alike."""

from __future__ import annotations

import csv
import io
from datetime import date

from schemas.ledger import SettlementLine


def statement_csv(
    batch_id: str, settlement_date: date, currency: str, lines: list[SettlementLine]
) -> str:
    """The settlement statement of one batch: a line per settled entry, then the net.
    Amounts are minor units, positive for what the merchant is owed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "batch_id",
            "settlement_date",
            "entry_id",
            "kind",
            "source_event_id",
            "currency",
            "amount_minor",
        ]
    )
    for line in lines:
        writer.writerow(
            [
                batch_id,
                settlement_date.isoformat(),
                line.entry_id,
                line.kind,
                line.source_event_id,
                currency,
                line.amount_minor,
            ]
        )
    net = sum(line.amount_minor for line in lines)
    writer.writerow([batch_id, settlement_date.isoformat(), "", "net", "", currency, net])
    return buffer.getvalue()
