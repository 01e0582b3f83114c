"""Progress of a download: hours done of total, ticks, rate. A bar on a terminal, log lines otherwise.

Rates are measured on the monotonic wall clock: they describe this machine's throughput, not
event time.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class CutShort:
    """The hour that was being published when the run stopped: how much of it went out."""

    symbol: str
    hour: str
    total: int
    counters: Any
    """The service's metrics: its ``published`` count when the hour began is ``base``."""
    base: int = -1

    def __post_init__(self) -> None:
        if self.base < 0:
            self.base = self.counters.published

    @property
    def published(self) -> int:
        return self.counters.published - self.base

    def text(self) -> str:
        return (
            f"{self.symbol} {self.hour} was cut short: {self.published:,} of its {self.total:,} ticks published; "
            "the hour is not marked done, the next run fetches it again"
        )


@dataclass
class DownloadStats:
    total: int
    skipped: int = 0
    done: int = 0
    empty: int = 0
    failed: int = 0
    ticks: int = 0
    bad_records: int = 0
    rejected: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    publishing: CutShort | None = None
    """The hour being published right now (what a stop would cut short)."""

    @property
    def finished(self) -> int:
        return self.done + self.empty + self.failed

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        rate = self.ticks / self.elapsed
        pct = 100.0 * self.finished / self.total if self.total else 100.0
        text = (
            f"{self.finished}/{self.total} hours ({pct:.0f}%), {self.ticks:,} ticks, {rate:,.0f} ticks/s, "
            f"{self.bytes / 1e6:.1f} MB, {self.empty} empty"
        )
        if self.failed:
            text += f", {self.failed} failed"
        if self.bad_records or self.rejected:
            text += f", {self.bad_records + self.rejected} bad records"
        return text

    def stopped_line(self) -> str:
        """The last word of a run that was stopped: every tick published is in one of its counts."""
        text = f"{self.line()}; {self.ticks - self.rejected:,} ticks of finished hours published"
        if self.publishing is not None:
            text += f", {self.publishing.text()}"
        return text


class Reporter:
    """Logs ``stats`` every ``every`` seconds; on a TTY draws a one-line bar instead (at most 5 per second)."""

    WIDTH = 24

    def __init__(self, log: logging.Logger, label: str, every: float, stream: TextIO | None = None) -> None:
        self.log = log
        self.label = label
        self.every = every
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = time.monotonic()
        self._drawn = False

    def update(self, stats: DownloadStats) -> None:
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.2 or stats.finished == stats.total:
                self._last = now
                self._draw(stats)
        elif now - self._last >= self.every:
            self._last = now
            self.log.info("%s: %s", self.label, stats.line())

    def _draw(self, stats: DownloadStats) -> None:
        filled = int(self.WIDTH * stats.finished / stats.total) if stats.total else self.WIDTH
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {stats.line()}\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
