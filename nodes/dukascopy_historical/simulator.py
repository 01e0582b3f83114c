"""A local Dukascopy datafeed: real ``.bi5`` hour files built from seeded synthetic quotes.

Serves ``{prefix}/{SYM}/{YYYY}/{MM0}/{DD}/{HH}h_ticks.bi5`` (month zero-based, as the real
feed) on 127.0.0.1. Each file is :func:`~nodes.dukascopy_historical.bi5.encode_ticks` of
:meth:`SyntheticQuotes.hour <nodes.marketdata.synthetic.SyntheticQuotes.hour>` with seeded
volumes; closed-market hours (weekends, 25 Dec, 1 Jan) are 0-byte bodies, unknown symbols and
other paths 404. Tests use it as the fake server; the node starts one in-process when its
params say ``simulate: true``.

Faults, per file (``symbol, hour_ms``): :meth:`fail` (an HTTP status for the first N
requests), :meth:`corrupt` (bytes that are not LZMA), :meth:`truncate` (the LZMA stream cut
in half), :meth:`break_records` (some records crossed), :meth:`missing` (404), :meth:`stall`
(answer after a delay), :meth:`serve` (a test's own bytes). Every request path is recorded
in :attr:`requests`.

Run one by hand: ``python -m nodes.dukascopy_historical.simulator --port 8080`` then point
``base_url`` at ``http://127.0.0.1:8080/datafeed``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from aiohttp import web

from nodes.dukascopy_historical.bi5 import TICK_RECORD, compress, decompress, encode_ticks
from nodes.dukascopy_historical.hours import HOUR_MS
from nodes.dukascopy_historical.instruments import decimal_factor, price_digits
from nodes.dukascopy_historical.urls import parse_tick_path, tick_path
from nodes.marketdata.serving import serve_until_interrupted
from nodes.marketdata.synthetic import TYPICAL, SyntheticQuotes

DEFAULT_SYMBOLS = tuple(TYPICAL)


@dataclass(frozen=True, slots=True)
class HourTicks:
    """What the simulator serves for one hour, as the decoder should read it back."""

    ts: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    bid_volume: np.ndarray
    ask_volume: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)


class DukascopySimulator:
    def __init__(
        self,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        *,
        seed: int = 7,
        mean_interval_ms: int = 2000,
        decimal_factors: Mapping[str, int] | None = None,
        prefix: str = "/datafeed",
        host: str = "127.0.0.1",
        port: int = 0,
        cache_hours: int = 512,
    ) -> None:
        self.symbols = [s.upper() for s in symbols]
        self.factors = {s: decimal_factor(s, decimal_factors) for s in self.symbols}
        digits = {s: min(TYPICAL.get(s, (1.0, 2.0, 5))[2], price_digits(f)) for s, f in self.factors.items()}
        self.quotes = SyntheticQuotes(self.symbols, seed=seed, mean_interval_ms=mean_interval_ms, digits=digits)
        self.seed = seed
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.host = host
        self.port = port
        self.requests: list[str] = []
        self.hits: Counter[str] = Counter()
        self._fail: dict[str, tuple[int, int]] = {}
        self._corrupt: set[str] = set()
        self._truncate: set[str] = set()
        self._missing: set[str] = set()
        self._broken: dict[str, tuple[int, ...]] = {}
        self._stall: dict[str, float] = {}
        self._served: dict[str, bytes] = {}
        self._cache: dict[tuple[str, int], bytes] = {}
        self._cache_hours = cache_hours
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ data

    def hour_ticks(self, symbol: str, hour_ms: int) -> HourTicks:
        """The quotes and volumes of one hour, exactly as served (closed hours: empty)."""
        quotes = self.quotes.hour(symbol, hour_ms)
        n = len(quotes)
        digest = hashlib.blake2b(f"{self.seed}:{symbol}:volume:{hour_ms // HOUR_MS}".encode(), digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "big"))
        volumes = np.round(rng.uniform(0.1, 9.99, (2, n)), 2)
        return HourTicks(
            ts=np.fromiter((q.ts for q in quotes), np.int64, n),
            bid=np.fromiter((q.bid for q in quotes), np.float64, n),
            ask=np.fromiter((q.ask for q in quotes), np.float64, n),
            bid_volume=volumes[0],
            ask_volume=volumes[1],
        )

    def body(self, symbol: str, hour_ms: int) -> bytes:
        """The ``.bi5`` body of one hour, before any fault."""
        key = (symbol, hour_ms)
        body = self._cache.get(key)
        if body is None:
            t = self.hour_ticks(symbol, hour_ms)
            body = encode_ticks(
                t.ts, t.bid, t.ask, t.bid_volume, t.ask_volume, hour_start_ms=hour_ms, decimal_factor=self.factors[symbol]
            )
            if len(self._cache) >= self._cache_hours:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = body
        return body

    # ------------------------------------------------------------------ faults

    @staticmethod
    def path(symbol: str, hour_ms: int) -> str:
        return tick_path(symbol, hour_ms)

    def fail(self, symbol: str, hour_ms: int, times: int = 1, status: int = 503) -> None:
        """Answer ``status`` to the first ``times`` requests of this file, then serve it."""
        self._fail[self.path(symbol, hour_ms)] = (times, status)

    def corrupt(self, symbol: str, hour_ms: int) -> None:
        self._corrupt.add(self.path(symbol, hour_ms))

    def truncate(self, symbol: str, hour_ms: int) -> None:
        self._truncate.add(self.path(symbol, hour_ms))

    def missing(self, symbol: str, hour_ms: int) -> None:
        self._missing.add(self.path(symbol, hour_ms))

    def break_records(self, symbol: str, hour_ms: int, indexes: Sequence[int]) -> None:
        """Serve the file with records ``indexes`` crossed (bid and ask swapped, bid raised one point)."""
        self._broken[self.path(symbol, hour_ms)] = tuple(indexes)

    def serve(self, symbol: str, hour_ms: int, body: bytes) -> None:
        """Serve ``body`` (a test's own bytes) as this file."""
        self._served[self.path(symbol, hour_ms)] = body

    def stall(self, symbol: str, hour_ms: int, seconds: float) -> None:
        self._stall[self.path(symbol, hour_ms)] = seconds

    def clear_faults(self) -> None:
        for faults in (self._fail, self._corrupt, self._truncate, self._missing, self._broken, self._stall, self._served):
            faults.clear()

    def _broken_body(self, body: bytes, indexes: tuple[int, ...]) -> bytes:
        records = np.frombuffer(decompress(body), TICK_RECORD).copy()
        for i in indexes:
            if 0 <= i < len(records):
                bid, ask = int(records["bid"][i]), int(records["ask"][i])
                records["bid"][i], records["ask"][i] = ask + 1, bid
        return compress(records.tobytes())

    # ------------------------------------------------------------------ server

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["tail"]
        self.requests.append(path)
        self.hits[path] += 1
        if path in self._stall:
            await asyncio.sleep(self._stall[path])
        if path in self._fail:
            times, status = self._fail[path]
            if self.hits[path] <= times:
                return web.Response(status=status, text=f"<html><body><h1>{status} Service Unavailable</h1></body></html>")
        try:
            symbol, hour_ms = parse_tick_path(path)
        except ValueError:
            raise web.HTTPNotFound() from None
        if symbol not in self.factors or path in self._missing:
            raise web.HTTPNotFound()
        body = self.body(symbol, hour_ms)
        if path in self._served:
            body = self._served[path]
        elif path in self._corrupt:
            body = b"\x5d\x00\x00\x40\x00" + hashlib.sha256(path.encode()).digest() * 8
        elif path in self._truncate:
            body = body[: max(len(body) // 2, 14)]
        elif path in self._broken and body:
            body = self._broken_body(body, self._broken[path])
        return web.Response(body=body, content_type="application/octet-stream")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{self.prefix}"

    async def start(self) -> str:
        """Serve on ``host:port`` (port 0: a free one); returns the base URL for the client."""
        app = web.Application()
        app.router.add_get(self.prefix + "/{tail:.+}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DukascopySimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve synthetic Dukascopy .bi5 hour files on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mean-interval-ms", type=int, default=2000)
    args = parser.parse_args(argv)

    sim = DukascopySimulator(seed=args.seed, mean_interval_ms=args.mean_interval_ms, port=args.port)
    return serve_until_interrupted(sim.start, sim.close, "serving {url}/EURUSD/2026/10/02/08h_ticks.bi5 ... (Ctrl-C stops)")

if __name__ == "__main__":
    raise SystemExit(main())
