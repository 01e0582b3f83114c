"""What a run has done so far: the figures behind ``fxrun``'s progress display and end-of-run summary.

Generic: the runtime knows the simulated time it reached, the messages its services published
and the dead letters; the nodes add what only they know, each through an optional hook of
:class:`~framework.node.Node`: ``headline()`` (a few named figures: trades, equity), a
source's ``event_span()`` (the event time it covers, so the progress has an end) and a
server's ``url``. Reading them changes nothing in the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from framework.clock import SimulatedClock
from framework.runtime.host import headline_of

if TYPE_CHECKING:
    from framework.runtime.core import Runtime

log = logging.getLogger("fxflow.runtime")


@dataclass(frozen=True)
class Progress:
    """One reading of a run (see :func:`RunProgress.read`)."""

    elapsed_s: float
    now_ms: int | None
    """The simulated time reached (None on a wall clock, or before the first event)."""
    start_ms: int | None
    end_ms: int | None
    """The event time the sources cover (from their ``event_span()``), when one says."""
    messages: int
    """Messages the services published (the ``out`` counters)."""
    dead_letters: int
    services: int
    running: int
    """Services whose node still runs (not stopped or failed)."""
    headlines: dict[str, dict[str, Any]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        """How far the simulated time is between the sources' start and end (0..1), when both are known."""
        if self.now_ms is None or self.start_ms is None or self.end_ms is None or self.end_ms <= self.start_ms:
            return None
        return min(1.0, max(0.0, (self.now_ms - self.start_ms) / (self.end_ms - self.start_ms)))


class RunProgress:
    """Reads a :class:`Progress` off a runtime; remembers the sources' spans (a stopped node has none)."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._spans: dict[str, tuple[int, int]] = {}
        self._t0 = time.monotonic()

    def read(self, final: bool = False) -> Progress:
        """The run now. ``final``: the summary's figures (a stopped node's final headline, a running node's
        ``headline(final=True)``); otherwise the progress figures of the nodes that run."""
        rt = self._rt
        headlines: dict[str, dict[str, Any]] = {}
        urls: dict[str, str] = {}
        messages = running = 0
        for name in rt.order or rt.services:
            host = rt.hosts.get(name)
            if host is None:
                continue
            messages += host.metrics.published
            node = host.node
            if node is None:
                figures = host.final_headline if final else None
            else:
                running += 1
                figures = headline_of(name, node, final)
                span = _span(name, node)
                if span is not None:
                    self._spans[name] = span
                url = _url(name, node)
                if url:
                    urls[name] = url
            if figures:
                headlines[name] = figures
        clock = rt.clock
        now_ms = clock.now_ms() if isinstance(clock, SimulatedClock) and clock.started else None
        spans = list(self._spans.values())
        return Progress(
            elapsed_s=time.monotonic() - self._t0,
            now_ms=now_ms,
            start_ms=min(s for s, _ in spans) if spans else None,
            end_ms=max(e for _, e in spans) if spans else None,
            messages=messages,
            dead_letters=rt.dead_letters.count if rt.dead_letters is not None else 0,
            services=len(rt.hosts),
            running=running,
            headlines=headlines,
            urls=urls,
        )


def _span(name: str, node: Any) -> tuple[int, int] | None:
    try:
        span = node.event_span()
        return (int(span[0]), int(span[1])) if span else None
    except Exception as exc:
        log.debug("service %s: event_span failed: %s: %s", name, type(exc).__name__, exc)
        return None


def _url(name: str, node: Any) -> str | None:
    try:
        url = node.url
        return str(url) if url else None
    except Exception as exc:
        log.debug("service %s: url failed: %s: %s", name, type(exc).__name__, exc)
        return None


# --- formatting ---------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A figure for the console: thousands separators, two decimals for a float, n/a for None or NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def format_figures(figures: dict[str, Any]) -> str:
    return " · ".join(f"{label} {format_value(value)}" for label, value in figures.items())


def _utc(ms: int, with_date: bool) -> str:
    moment = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def format_time(p: Progress) -> str | None:
    """``2026-11-02 01:12 / 02:00 UTC (60%)``: the simulated time reached and where the sources end."""
    if p.now_ms is None:
        return None
    if p.end_ms is None:
        return f"{_utc(p.now_ms, True)} UTC"
    same_day = p.now_ms // 86_400_000 == p.end_ms // 86_400_000
    text = f"{_utc(p.now_ms, True)} / {_utc(p.end_ms, not same_day)} UTC"
    return f"{text} ({p.fraction:.0%})" if p.fraction is not None else text


def format_progress(p: Progress) -> str:
    """One line: elapsed wall time, simulated time, messages, dead letters and every node's headline."""
    parts = [_clock(p.elapsed_s)]
    moment = format_time(p)
    if moment is not None:
        parts.append(f"sim {moment}")
    parts.append(f"{p.messages:,} msgs")
    for figures in p.headlines.values():
        parts.append(format_figures(figures))
    parts.append(f"{p.dead_letters:,} dead letters")
    return " · ".join(parts)


def format_summary(p: Progress) -> list[str]:
    """The lines above the per-service table at the end of a run."""
    span = ""
    if p.start_ms is not None and p.now_ms is not None:
        span = f", simulated {_utc(p.start_ms, True)} → {_utc(p.now_ms, p.start_ms // 86_400_000 != p.now_ms // 86_400_000)} UTC"
    lines = [f"run ended after {_clock(p.elapsed_s)}{span}: {p.messages:,} messages published, {p.dead_letters:,} dead letter(s)"]
    width = max((len(name) for name in p.headlines), default=0)
    lines += [f"  {name:{width}}  {format_figures(figures)}" for name, figures in p.headlines.items()]
    return lines


# --- the console ----------------------------------------------------------------------------

LIVE_EVERY_S = 1.0
LOG_EVERY_S = 10.0
BAR = 12


class ProgressDisplay:
    """A run's progress on the console.

    On a terminal (``live``): a status block of a few lines kept at the bottom of ``stream``,
    under the log lines, redrawn every ``every_s`` (``emit`` writes a log record above it).
    Otherwise a plain ``progress:`` log line every ``every_s``. Either way a server's URL is
    announced once on stdout as soon as it serves.
    """

    def __init__(self, stream: Any, *, live: bool, every_s: float | None = None) -> None:
        self.stream = stream
        self.live = live
        self.every_s = every_s or (LIVE_EVERY_S if live else LOG_EVERY_S)
        self.source: RunProgress | None = None
        self._lines: list[str] = []
        self._lock = threading.RLock()
        self._announced: set[str] = set()
        self._closed = False

    # --- writing around the block ---------------------------------------------------------

    def emit(self, write: Callable[[], None]) -> None:
        """Write something else (a log record, a line on stdout): the block goes, the text, the block again."""
        with self._lock:
            shown = self._lines
            self._erase()
            write()
            self._draw(shown)

    def _erase(self) -> None:
        if not self._lines:
            return
        self.stream.write("\r\x1b[2K" + "\x1b[1A\x1b[2K" * (len(self._lines) - 1))
        self.stream.flush()
        self._lines = []

    def _draw(self, lines: list[str]) -> None:
        if not lines or self._closed:
            return
        width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)  # a wrapped line would break the erasing
        lines = [line if len(line) <= width else line[: width - 1] + "…" for line in lines]
        self.stream.write("\n".join(lines))
        self.stream.flush()
        self._lines = lines

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Show the progress every ``every_s`` until cancelled (the run's end); a new URL within a second."""
        due = time.monotonic() + self.every_s
        while True:
            await asyncio.sleep(min(1.0, self.every_s))
            now = time.monotonic()
            self.update(show=now >= due)
            if now >= due:
                due = now + self.every_s

    def update(self, show: bool = True) -> None:
        if self.source is None or self._closed:
            return
        p = self.source.read()
        self._announce(p)
        if not show:
            return
        if self.live:
            with self._lock:
                self._erase()
                self._draw(_block(p))
        else:
            log.info("progress: %s", format_progress(p))

    def _announce(self, p: Progress) -> None:
        for name, url in p.urls.items():
            if url not in self._announced:
                self._announced.add(url)
                self.say(f">>> {name}: open {url} in a browser")

    @staticmethod
    def say(text: str) -> None:
        """A line on stdout (above the block: see :meth:`owning_terminal`)."""
        print(text, flush=True)

    def close(self) -> None:
        """The block goes for good (the summary follows)."""
        with self._lock:
            self._erase()
            self._closed = True

    @contextlib.contextmanager
    def owning_terminal(self) -> Iterator[None]:
        """While live, ``sys.stdout`` and ``sys.stderr`` write above the block, and say they are no terminal:
        a node that would draw its own bar there (a downloader, a training) logs its progress instead."""
        if not self.live:
            yield
            return
        saved = sys.stdout, sys.stderr
        if sys.stdout.isatty():
            sys.stdout = _AboveBlock(sys.stdout, self)
        sys.stderr = _AboveBlock(sys.stderr, self)
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, _AboveBlock):
                    stream.flush()
            sys.stdout, sys.stderr = saved


class _AboveBlock(io.TextIOBase):
    """A console stream whose whole lines are written above a live progress block."""

    def __init__(self, real: TextIO, display: ProgressDisplay) -> None:
        self.real = real
        self.display = display
        self._partial = ""

    def write(self, text: str) -> int:
        if self.display._closed:
            self.flush()
            return self.real.write(text)
        head, newline, tail = (self._partial + text).rpartition("\n")
        self._partial = tail
        if newline:
            self.display.emit(lambda: (self.real.write(head + newline), self.real.flush()))
        return len(text)

    def flush(self) -> None:
        if self._partial:
            partial, self._partial = self._partial, ""
            self.display.emit(lambda: self.real.write(partial + "\n"))
        self.real.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.real.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.real.encoding


def _block(p: Progress) -> list[str]:
    """The live block: time and counts; every node's headline; the servers' URLs."""
    first = [f"[{_clock(p.elapsed_s)}]"]
    moment = format_time(p)
    if moment is not None:
        first.append(f"sim {moment}")
        if p.fraction is not None:
            done = round(p.fraction * BAR)
            first.append("[" + "#" * done + "-" * (BAR - done) + "]")
    first.append(f"{p.messages:,} msgs · {p.dead_letters:,} dead letters")
    lines = ["  ".join(first)]
    lines += [f"  {name}: {format_figures(figures)}" for name, figures in p.headlines.items()]
    lines += [f"  {name}: {url}" for name, url in p.urls.items()]
    return lines
