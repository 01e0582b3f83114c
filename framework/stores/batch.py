"""Batched table writes that never drop a row silently.

Rows are buffered per table and flushed when ``batch_size`` rows are waiting or every
``interval`` seconds. A failed flush keeps the batch and retries with exponential backoff;
while the buffer is full (``max_buffer`` rows) ``add`` waits, so memory stays bounded and
back-pressure reaches the producer. Rows still unwritable at shutdown are spilled to
``<spill_dir>/<table>.jsonl`` and reported, never discarded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from framework.stores.base import Store, StoreError

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
    ) -> None:
        self.store = store
        self.table = table
        self.batch_size = batch_size
        self.interval = interval
        self.max_buffer = max(max_buffer, batch_size)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.spill_dir = spill_dir
        self._rows: list[Mapping[str, Any]] = []
        self._space = asyncio.Condition()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._periodic(), name=f"batch-{self.table}")

    @property
    def pending(self) -> int:
        return len(self._rows)

    async def add(self, row: Mapping[str, Any]) -> None:
        if len(self._rows) >= self.max_buffer:
            async with self._space:
                await self._space.wait_for(lambda: len(self._rows) < self.max_buffer)
        self._rows.append(row)
        if len(self._rows) >= self.batch_size and not self._lock.locked():
            await self.flush(retry=False)

    async def flush(self, retry: bool = True) -> bool:
        """Write what is buffered. With ``retry`` keep trying (with backoff) until it succeeds."""
        async with self._lock:
            delay = self.backoff_initial
            while self._rows:
                batch = self._rows[:]
                try:
                    await self.store.insert(self.table, batch)
                except StoreError as exc:
                    self.failures += 1
                    self.last_error = str(exc)
                    log.error("write of %d rows to %s failed (kept, will retry): %s", len(batch), self.table, exc)
                    if not retry:
                        return False
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff_max)
                    continue
                del self._rows[: len(batch)]
                self.written += len(batch)
                async with self._space:
                    self._space.notify_all()
            return True

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._rows:
                await self.flush(retry=False)

    async def close(self, attempts: int = 3) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for _ in range(attempts):
            if await self.flush(retry=False):
                return
            await asyncio.sleep(self.backoff_initial)
        self._spill()

    def _spill(self) -> None:
        if not self._rows:
            return
        if self.spill_dir is None:
            raise StoreError(f"{len(self._rows)} rows for {self.table} could not be written and no spill dir is set")
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f"{self.table}.jsonl"
        with open(path, "ab") as handle:
            for row in self._rows:
                handle.write(orjson.dumps(row) + b"\n")
        log.error("%d rows for %s spilled to %s (%s)", len(self._rows), self.table, path, self.last_error)
        self._rows.clear()
