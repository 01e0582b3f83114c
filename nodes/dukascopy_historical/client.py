"""Downloading hours of Dukascopy ticks: a swappable source and a bounded parallel downloader.

A :class:`HourSource` turns ``(symbol, hour)`` into decoded ticks. :class:`Bi5Source` reads the
bi5 datafeed over :class:`~nodes.marketdata.http.HttpClient` (retries 503s, 5xx, 429 and
timeouts with back-off). Another source (dukascopy-node moved to an undocumented JSON API in
2026-07; see protocols.md 3.5) only has to implement ``hour`` and ``close``: the downloader
and the node do not know about bi5.

Every outcome is a :class:`HourResult`, never an exception: ``ok`` (ticks, maybe with bad
records set aside), ``empty`` (0-byte body or 404: no ticks that hour) or ``failed`` (an HTTP
error after retries, a file that cannot be decoded), so one bad hour never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from nodes.dukascopy_historical.bi5 import Bi5Error, Ticks, decode_ticks
from nodes.dukascopy_historical.urls import DEFAULT_BASE_URL, tick_url
from nodes.marketdata.http import HttpClient, HttpError, RetryPolicy, redact

log = logging.getLogger(__name__)

Status = Literal["ok", "empty", "failed"]
THREAD_DECODE_BYTES = 16_384
"""Bodies larger than this are decoded on a worker thread (liblzma releases the GIL), so big
hours decompress in parallel and the event loop keeps serving downloads."""


@dataclass(slots=True)
class HourResult:
    symbol: str
    hour_ms: int
    status: Status
    ticks: Ticks = field(default_factory=Ticks.empty)
    error: str | None = None
    where: str = ""
    """Where the hour came from (URL without secrets), for logs and dead letters."""
    size: int = 0
    """Bytes received."""


class HourSource(Protocol):
    """Where hours of ticks come from (the bi5 datafeed today)."""

    name: str

    async def hour(self, symbol: str, hour_ms: int) -> HourResult:
        """The ticks of ``symbol`` in the UTC hour starting at ``hour_ms``; never raises for bad data."""
        ...

    async def close(self) -> None: ...


class Bi5Source:
    """Hourly ``.bi5`` tick files from the Dukascopy datafeed (or the local simulator)."""

    name = "bi5"

    def __init__(
        self,
        decimal_factors: Mapping[str, int],
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        http: HttpClient | None = None,
        on_retry: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.decimal_factors = dict(decimal_factors)
        self.base_url = base_url.rstrip("/")
        self.http = http or HttpClient(timeout=timeout, retry=retry, on_retry=on_retry)

    def url(self, symbol: str, hour_ms: int) -> str:
        return tick_url(self.base_url, symbol, hour_ms)

    async def hour(self, symbol: str, hour_ms: int) -> HourResult:
        url = self.url(symbol, hour_ms)
        shown = redact(url)
        try:
            status, body = await self.http.get_bytes(url, ok=(200, 404))
        except HttpError as exc:
            return HourResult(symbol, hour_ms, "failed", error=str(exc), where=exc.url)
        if status == 404 or not body:
            return HourResult(symbol, hour_ms, "empty", where=shown)
        factor = self.decimal_factors[symbol]
        try:
            if len(body) > THREAD_DECODE_BYTES:
                ticks = await asyncio.to_thread(decode_ticks, body, hour_ms, factor)
            else:
                ticks = decode_ticks(body, hour_ms, factor)
        except Bi5Error as exc:
            return HourResult(symbol, hour_ms, "failed", error=f"{shown}: {exc.reason}", where=shown, size=len(body))
        return HourResult(symbol, hour_ms, "ok" if len(ticks) or ticks.bad else "empty", ticks, where=shown, size=len(body))

    async def close(self) -> None:
        await self.http.close()


async def download(source: HourSource, jobs: Iterable[tuple[str, int]], concurrency: int) -> AsyncIterator[HourResult]:
    """Fetch ``(symbol, hour_ms)`` jobs with at most ``concurrency`` in flight; yield them in job order.

    Downloads overlap, but results come in the order of ``jobs``, whatever the network does,
    so a run publishes the same hours in the same order every time (the simulation driver's
    determinism needs it). Jobs are taken from ``jobs`` lazily, so memory holds at most
    ``concurrency`` hours. Closing the iterator early cancels what is still in flight.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    queue = iter(jobs)
    running: deque[tuple[asyncio.Task[HourResult], tuple[str, int]]] = deque()

    def fill() -> None:
        while len(running) < concurrency:
            job = next(queue, None)
            if job is None:
                return
            running.append((asyncio.ensure_future(source.hour(*job)), job))

    fill()
    try:
        while running:
            task, (symbol, hour_ms) = running[0]
            await asyncio.wait([task])
            running.popleft()
            fill()
            exc = task.exception()
            if exc is not None:  # a source must not raise; if it does, that hour fails alone
                yield HourResult(symbol, hour_ms, "failed", error=f"{type(exc).__name__}: {exc}")
            else:
                yield task.result()
    finally:
        for task, _ in running:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*(task for task, _ in running), return_exceptions=True)
