"""A relay process that takes a batch and then hangs before publishing, to be killed.

Usage: python -m tests.support.hanging_relay DSN SCHEMA BOOTSTRAP PREFIX MARKER_FILE
It writes MARKER_FILE once it holds the batch (inside the relay's transaction) and then
waits forever; the test kills it with SIGKILL at that point.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from services.common.db import create_pool
from services.common.outbox import OutboundRecord, OutboxRelay


class HangingPublisher:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    async def publish_batch(self, records: Sequence[OutboundRecord]) -> None:
        self.marker.write_text(str(len(records)))
        await asyncio.Event().wait()


async def main(dsn: str, schema: str, prefix: str, marker: str) -> None:
    pool = await create_pool(dsn, schema)
    relay = OutboxRelay(pool, schema, HangingPublisher(Path(marker)), topic_prefix=prefix)
    await relay.publish_pending()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]))
