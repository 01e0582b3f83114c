"""Buckets Polygon was asked for and had no bar for, kept across runs.

FX has quiet minutes (and holidays) with no quotes, so no aggregate: without this memory
every run would ask for each such minute again, one request per isolated gap, which on a
5-requests-per-minute plan is most of the budget. Only buckets that ended at least the
settle time before the request are remembered (a bar just closed may not be served yet).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import orjson

log = logging.getLogger(__name__)


class EmptyBuckets:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._empty: dict[str, set[int]] = {}
        self._dirty = False

    @staticmethod
    def key(symbol: str, timeframe: str) -> str:
        return f"{symbol}/{timeframe}"

    @classmethod
    def load(cls, path: Path) -> EmptyBuckets:
        memory = cls(path)
        try:
            data = orjson.loads(path.read_bytes())
            memory._empty = {str(k): {int(t) for t in v} for k, v in data.items()}
        except FileNotFoundError:
            pass
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            log.warning("ignoring unreadable %s (%s): known-empty buckets will be asked for again", path, exc)
        return memory

    def get(self, symbol: str, timeframe: str) -> set[int]:
        return self._empty.get(self.key(symbol, timeframe), set())

    def add(self, symbol: str, timeframe: str, starts: Iterable[int]) -> int:
        bucket = self._empty.setdefault(self.key(symbol, timeframe), set())
        before = len(bucket)
        bucket.update(starts)
        added = len(bucket) - before
        self._dirty = self._dirty or added > 0
        return added

    def prune(self, before_ms: int) -> None:
        """Forget buckets older than every window still scanned."""
        for key, starts in list(self._empty.items()):
            kept = {t for t in starts if t >= before_ms}
            if len(kept) != len(starts):
                self._dirty = True
                if kept:
                    self._empty[key] = kept
                else:
                    del self._empty[key]

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({k: sorted(v) for k, v in sorted(self._empty.items())}))
        os.replace(tmp, self.path)
        self._dirty = False

    def __len__(self) -> int:
        return sum(len(v) for v in self._empty.values())
