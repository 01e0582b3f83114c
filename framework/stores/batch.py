"""Batched table writes that never drop a row silently; the same mechanism for every store.

Rows are buffered per table and one background task writes them, in batches of at most
``batch_size``, as soon as ``batch_size`` rows are waiting or every ``interval`` seconds.

- **Store down**: a failed write keeps its rows and is retried, in order, with exponential
  backoff (``backoff_initial`` doubling to ``backoff_max``, jittered) until it succeeds. An
  outage is logged once, as an error, when it begins and once, as a warning, when writes
  recover; every failed attempt is counted (``failures``), as is every outage (``outages``)
  (:class:`framework.outage.Outage`).
- **Bounded memory**: the buffer, including the batch being retried, holds at most
  ``max_buffer`` rows; ``add`` waits while it is full, so back-pressure reaches the producer.
- **Rejected rows** (``StoreRejected``: a wrong type, a constraint) can never be written: the
  batch is halved until the culprits are isolated, everything else is written, and each culprit
  is appended to ``<spill_dir>/<table>.rejected.jsonl`` and counted (``rejected``), so one bad
  row cannot stall its table.
- **Shutdown**: ``close`` lets the task finish its current attempt, keeps retrying for
  ``close_timeout`` seconds, then spills whatever is still unwritten to
  ``<spill_dir>/<table>.jsonl`` with an error, never discarding it.

Delivery is at least once: a write that succeeded but whose reply was lost is written again
(ReplacingMergeTree tables absorb that).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from framework.outage import Outage
from framework.stores.base import Store, StoreError, StoreRejected

log = logging.getLogger(__name__)


class BatchWriter:
    def __init__(
        self,
        store: Store,
        table: str,
        *,
        batch_size: int = 1000,
        interval: float = 1.0,
        max_buffer: int = 100_000,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        spill_dir: Path | None = None,
        close_timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.table = table
        self.batch_size = max(batch_size, 1)
        self.interval = interval
        self.max_buffer = max(max_buffer, self.batch_size)
        self.backoff_initial = backoff_initial
        self.backoff_max = max(backoff_max, backoff_initial)
        self.spill_dir = spill_dir
        self.close_timeout = close_timeout
        self._rows: list[Mapping[str, Any]] = []
        self._space = asyncio.Condition()
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._outage = Outage(
            log,
            began=lambda o: (
                f"writes to table {self.table} are failing; {len(self._rows)} rows kept and retried with backoff "
                f"(up to {self.backoff_max:.0f}s apart): {o.last_error}"
            ),
            ended=lambda o: f"writes to table {self.table} recovered after {o.duration:.1f}s ({o.attempts} failed attempts)",
            initial=self.backoff_initial,
            maximum=self.backoff_max,
        )
        self.added = 0
        self.written = 0
        self.rejected = 0
        self.spilled = 0
        self.waits = 0

    def start(self) -> None:
        if self._task is None and not self._closed and not self._closing.is_set():
            self._task = asyncio.create_task(self._run(), name=f"batch-{self.table}")

    @property
    def pending(self) -> int:
        return len(self._rows)

    @property
    def settled(self) -> int:
        """Rows that are done with: written, or rejected for good (set aside). Spilled rows are
        not: a refill from the archive writes them on the next start."""
        return self.written + self.rejected

    @property
    def failing(self) -> bool:
        """True from the first failed write of an outage until a write succeeds again."""
        return self._outage.down

    @property
    def failures(self) -> int:
        """Failed write attempts, retries included."""
        return self._outage.failures

    @property
    def outages(self) -> int:
        return self._outage.outages

    @property
    def last_error(self) -> str | None:
        return self._outage.last_error

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "pending": self.pending,
            "written": self.written,
            "failures": self.failures,
            "outages": self.outages,
            "failing": self.failing,
            "rejected": self.rejected,
            "spilled": self.spilled,
            "waits": self.waits,
            "last_error": self.last_error,
        }

    async def add(self, row: Mapping[str, Any]) -> None:
        """Buffer ``row``; waits while the buffer is full (the store is down or slower than the producer)."""
        if self._task is not None and len(self._rows) < self.max_buffer and not self._closing.is_set():
            self._rows.append(row)
            self.added += 1
            if len(self._rows) >= self.batch_size:
                self._wake.set()
            return
        await self.add_many((row,))

    async def add_many(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Buffer ``rows``, waiting for room as :meth:`add` does, in as few steps as the room allows.

        A caller cancelled while it waits (a stop) has counted its rows as published: they
        are buffered anyway, beyond ``max_buffer``, so ``close`` writes or spills them."""
        done = 0
        try:
            while done < len(rows):
                if self._closed or self._closing.is_set():
                    raise StoreError(f"the writer of table {self.table!r} is closed")
                self.start()
                room = self.max_buffer - len(self._rows)
                if room <= 0:
                    self.waits += 1
                    async with self._space:
                        await self._space.wait_for(lambda: len(self._rows) < self.max_buffer or self._closing.is_set())
                    if self._closed:
                        raise StoreError(f"the writer of table {self.table!r} closed while rows waited for room")
                    continue
                chunk = rows[done : done + room]
                self._rows.extend(chunk)
                self.added += len(chunk)
                done += len(chunk)
                if len(self._rows) >= self.batch_size:
                    self._wake.set()
        except asyncio.CancelledError:
            rest = rows[done:]
            self._rows.extend(rest)
            self.added += len(rest)
            raise

    async def flush(self, retry: bool = True) -> bool:
        """Write everything buffered now. With ``retry`` keep retrying (with backoff) until it is
        written or the writer closes; without, stop at the first failure. True when all was written.

        A caller cancelled meanwhile stops waiting, not writing: an insert under way (a thread,
        a server's round trip) would complete anyway, and rows it wrote must leave the buffer,
        or ``close`` would write them again."""
        return await asyncio.shield(asyncio.ensure_future(self._flush(retry)))

    async def _flush(self, retry: bool) -> bool:
        async with self._lock:
            return await self._drain(None if retry else asyncio.get_running_loop().time())

    async def close(self, timeout: float | None = None) -> None:
        """Flush, retrying for ``timeout`` (default ``close_timeout``) seconds, then spill the rest."""
        if self._closed:
            return
        self._closing.set()
        self._wake.set()
        async with self._space:
            self._space.notify_all()
        try:
            if self._task is not None:
                await asyncio.gather(self._task, return_exceptions=True)
                self._task = None
            deadline = asyncio.get_running_loop().time() + (self.close_timeout if timeout is None else timeout)
            async with self._lock:
                if not await self._drain(deadline):
                    self._spill()
        finally:
            self._closed = True

    async def _run(self) -> None:
        """Full batches as soon as they fill; everything else once ``interval`` has passed."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self.interval
        while not self._closing.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(due - loop.time(), 0.0))
            except TimeoutError:
                pass
            self._wake.clear()
            if self._closing.is_set():
                break
            timely = loop.time() >= due
            if timely:
                due = loop.time() + self.interval
            try:
                async with self._lock:
                    await self._drain(None, full_only=not timely)
            except Exception:
                log.exception("writer of table %s: unexpected error, rows kept", self.table)
                await self._pause(self.backoff_max, None)

    async def _drain(self, deadline: float | None, full_only: bool = False) -> bool:
        while len(self._rows) >= (self.batch_size if full_only else 1):
            if not await self._write_front(min(len(self._rows), self.batch_size), deadline):
                return False
        return True

    async def _write_front(self, count: int, deadline: float | None) -> bool:
        """Write the first ``count`` buffered rows. Only this removes rows, always from the front,
        so the buffer's head is exactly the pieces still to write, in order."""
        pieces = deque([count])
        while pieces:
            size = pieces[0]
            rows = self._rows[:size]
            try:
                await self.store.insert(self.table, rows)
            except StoreRejected as exc:
                self._outage.recovered()
                pieces.popleft()
                if size == 1:
                    self._reject(rows[0], exc)
                    await self._consume(1, written=False)
                else:
                    half = size // 2
                    pieces.extendleft((size - half, half))
                continue
            except Exception as exc:
                self._outage.failed(str(exc) if isinstance(exc, StoreError) else exc)
                if not await self._pause(self._outage.delay(), deadline):
                    return False
                continue
            self._outage.recovered()
            pieces.popleft()
            await self._consume(size)
        return True

    async def _pause(self, delay: float, deadline: float | None) -> bool:
        """Wait before a retry. False means give up: the close deadline passed, or (for the
        background task, which has no deadline) close began, which takes the retrying over."""
        if deadline is None:
            if self._closing.is_set():
                return False
            try:
                await asyncio.wait_for(self._closing.wait(), timeout=delay)
            except TimeoutError:
                return True
            return False
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return False
        await asyncio.sleep(min(delay, left))
        return True

    async def _consume(self, count: int, written: bool = True) -> None:
        del self._rows[:count]
        if written:
            self.written += count
        async with self._space:
            self._space.notify_all()

    def _reject(self, row: Mapping[str, Any], exc: StoreRejected) -> None:
        self.rejected += 1
        record = orjson.dumps({"error": str(exc), "row": row}, default=str)
        if self.spill_dir is None:
            log.error("table %s rejected this row (no spill dir to set it aside in): %s", self.table, record.decode()[:1000])
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f"{self.table}.rejected.jsonl"
        with open(path, "ab") as handle:
            handle.write(record + b"\n")
        log.error("table %s rejected a row, set aside in %s: %s", self.table, path, exc)

    def _spill(self) -> None:
        if not self._rows:
            return
        count = len(self._rows)
        if self.spill_dir is None:
            raise StoreError(f"{count} rows for {self.table} could not be written and no spill dir is set ({self.last_error})")
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f"{self.table}.jsonl"
        with open(path, "ab") as handle:
            handle.writelines(orjson.dumps(row, default=str) + b"\n" for row in self._rows)
        self.spilled += count
        log.error("%d rows for %s spilled to %s (%s)", count, self.table, path, self.last_error)
        self._rows.clear()
