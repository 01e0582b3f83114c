"""Which (symbol, hour) are done: an append-only JSON-lines file, so a restarted run skips them.

One line per finished hour: ``{"symbol": "EURUSD", "hour": <epoch ms>, "ticks": 1234, "distinct": 1230}``
(``distinct`` = distinct timestamps, what the ``(symbol, ts)``-keyed table keeps). A later line
for the same hour wins. A line cut short by a crash is skipped. Appending one line per hour
keeps a crash from losing more than the hour in progress; the file is rewritten without
superseded lines when they outnumber the live ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

import orjson

log = logging.getLogger(__name__)


class Done(NamedTuple):
    ticks: int
    distinct: int


class Progress:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._done: dict[tuple[str, int], Done] = {}
        self._lines = 0
        self._handle: IO[bytes] | None = None
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                    key = (str(row["symbol"]), int(row["hour"]))
                    done = Done(int(row["ticks"]), int(row.get("distinct", row["ticks"])))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    log.warning("%s:%d: unreadable progress line skipped (that hour will be fetched again)", self.path, number)
                    continue
                self._done[key] = done
                self._lines += 1
        if self._lines > 2 * len(self._done) + 1000:
            self._compact()

    def __len__(self) -> int:
        return len(self._done)

    def __contains__(self, key: object) -> bool:
        return key in self._done

    def get(self, symbol: str, hour_ms: int) -> Done | None:
        return self._done.get((symbol, hour_ms))

    def items(self) -> Iterator[tuple[tuple[str, int], Done]]:
        return iter(self._done.items())

    def mark(self, symbol: str, hour_ms: int, ticks: int, distinct: int) -> None:
        """Record ``(symbol, hour)`` as done (flushed at once)."""
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "ab")
        self._handle.write(orjson.dumps({"symbol": symbol, "hour": hour_ms, "ticks": ticks, "distinct": distinct}) + b"\n")
        self._handle.flush()
        self._done[(symbol, hour_ms)] = Done(ticks, distinct)
        self._lines += 1

    def forget(self, symbol: str, hour_ms: int) -> None:
        """Fetch this hour again in this run (the file keeps its line until the hour is marked anew)."""
        self._done.pop((symbol, hour_ms), None)

    def _compact(self) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "wb") as handle:
            for (symbol, hour_ms), done in sorted(self._done.items()):
                handle.write(orjson.dumps({"symbol": symbol, "hour": hour_ms, "ticks": done.ticks, "distinct": done.distinct}) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)
        self._lines = len(self._done)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
