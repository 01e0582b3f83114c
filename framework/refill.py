"""Refilling tables from the archive after a crash.

A port with a Kafka archive commits there first (:meth:`NodeContext.publish`), and its
tables are written afterwards, in batches. A process killed between the two loses the rows
its table writers still held, but not the records: on the next start the runtime reads the
archive back from where the tables were known to be complete and writes this service's
records (``fxflow-service`` header) into them again. Tables fed this way must be idempotent
(a ReplacingMergeTree, or a unique ``key``): rows written twice collapse.

Where the tables were known to be complete is a *watermark* per service and table: a time
on the service's clock before which every row the service handed to the table's writer is
written. It is found from checkpoints ``(rows handed over so far, time)`` taken every
second: once the writer has settled that many rows, everything published before that time
is in the table, except messages still waiting for their archive acknowledgement then
(at most ``archive_wait``), which the refill window's margin covers. The watermarks live in
``<data_dir>/services/<service>/watermarks.json``, replaced atomically (a crash leaves the
old file or the new one; the old one only makes the refill longer). A clean stop marks the
file complete, so the next start refills nothing; the start marks it incomplete again.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import orjson

from framework.clock import Clock
from framework.context import PRODUCER_HEADER
from framework.stores.batch import BatchWriter
from framework.transport.base import LogTransport

log = logging.getLogger("fxflow.refill")
FILE = "watermarks.json"


class Watermarks:
    """The watermark of each table one service writes from an archived port."""

    def __init__(self, directory: Path, writers: Mapping[str, BatchWriter], clock: Clock) -> None:
        self.path = Path(directory) / FILE
        self.writers = dict(writers)
        self.clock = clock
        self.marks, self.clean = load(self.path)
        self._checkpoints: dict[str, deque[tuple[int, int]]] = {t: deque() for t in self.writers}
        self._saved: dict[str, int] | None = None

    def tick(self) -> None:
        """Take a checkpoint, advance what the writers have settled, save when it moved."""
        if not getattr(self.clock, "started", True):
            return
        now = self.clock.now_ms()
        for table, writer in self.writers.items():
            checkpoints = self._checkpoints[table]
            checkpoints.append((writer.added, now))
            settled = writer.settled
            while checkpoints and checkpoints[0][0] <= settled:
                self.marks[table] = checkpoints.popleft()[1]
        if self.marks != self._saved:
            self.save(clean=False)

    def save(self, *, clean: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(orjson.dumps({"marks": self.marks, "clean": clean}))
        os.replace(tmp, self.path)
        self._saved = dict(self.marks)

    def close(self) -> None:
        """After a clean stop (every writer closed): the tables are complete."""
        self.tick()
        complete = all(w.settled == w.added for w in self.writers.values())
        self.save(clean=complete)


def load(path: Path) -> tuple[dict[str, int], bool]:
    """The marks and whether the last stop was clean (nothing to refill)."""
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}, False
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("ignoring unreadable watermarks %s (%s): no refill this time", path, exc)
        return {}, False
    if not isinstance(doc, dict) or not isinstance(doc.get("marks"), dict):
        return {}, False
    return {str(t): int(v) for t, v in doc["marks"].items() if isinstance(v, int)}, doc.get("clean") is True


async def refill(
    service: str,
    log_transport: LogTransport,
    topics: tuple[str, ...],
    writer: BatchWriter,
    since_ms: int,
) -> int:
    """Write ``service``'s records of ``topics`` stamped from ``since_ms`` on into ``writer``'s table."""
    count = 0
    async for records in log_transport.read(topics, since_ms):
        rows = [r.value for r in records if r.headers.get(PRODUCER_HEADER) == service]
        if rows:
            await writer.add_many(rows)
            count += len(rows)
    return count
