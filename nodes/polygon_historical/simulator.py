"""A local Polygon REST aggregates server: the real wire format over seeded synthetic quotes.

``GET /v2/aggs/ticker/C:EURUSD/range/{multiplier}/{timespan}/{from}/{to}`` answers with bars
of the bid built by the one aggregation (:mod:`nodes.marketdata.bars`) from
:class:`~nodes.marketdata.synthetic.SyntheticQuotes`, so any range is the same on every call.
Like the real API: ``from``/``to`` are Unix ms or ``YYYY-MM-DD`` (both inclusive), ``results``
is absent for an empty range, a response holds at most ``limit`` base (minute) aggregates and
``page_size`` bars and otherwise carries a ``next_url`` (no key, a ``cursor`` query), and the key
is accepted as ``Authorization: Bearer`` or ``apiKey``.

Faults for tests: :meth:`fail_next` (429 with Polygon's body, 504 nginx HTML, 500, 401…),
``api_key`` (a wrong key gets 401 ``Unknown API Key``), ``forbidden`` timespans (403
``NOT_AUTHORIZED``) and :meth:`corrupt` (change or drop fields of one served bar). Every
request is kept in :attr:`requests`.

Run alone: ``python -m nodes.polygon_historical.simulator --port 8765``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from nodes.marketdata.bars import Bars, aggregate_ticks, merge_bars
from nodes.marketdata.serving import serve_until_interrupted
from nodes.marketdata.symbols import normalize
from nodes.marketdata.synthetic import HOUR_MS, TYPICAL, SyntheticQuotes
from nodes.marketdata.timeframes import Buckets, timeframe

MINUTE_MS = 60_000
UNITS = {"second": "s", "minute": "m", "hour": "h", "day": "d", "week": "w"}
ROUTE = "/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from_}/{to}"

RATE_LIMIT_BODY = (
    "You've exceeded the maximum requests per minute, please wait or upgrade your subscription to continue. "
    "https://polygon.io/pricing"
)
NOT_ENTITLED_BODY = "Your plan doesn't include this data timeframe. Please upgrade your plan at https://polygon.io/pricing"
GATEWAY_TIMEOUT_HTML = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the simulator saw it (``from_ms`` is the page start for a cursor request)."""

    path: str
    symbol: str | None
    multiplier: int | None
    timespan: str | None
    from_ms: int | None
    to_ms: int | None
    cursor: bool
    key: str | None
    status: int


def _ms(segment: str, *, end_of_day: bool) -> int:
    if segment.isdigit():
        return int(segment)
    day = date.fromisoformat(segment)
    start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)
    return start + 86_400_000 - 1 if end_of_day else start


def _encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def _decode_cursor(text: str) -> dict[str, Any]:
    return orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


class PolygonSimulator:
    def __init__(
        self,
        *,
        seed: int = 7,
        mean_interval_ms: int = 2000,
        api_key: str | None = None,
        page_size: int = 50_000,
        forbidden: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        cache_hours: int = 8192,
    ) -> None:
        self.quotes = SyntheticQuotes(list(TYPICAL), seed=seed, mean_interval_ms=mean_interval_ms)
        self.api_key = api_key
        self.page_size = page_size
        self.forbidden = set(forbidden)
        self.host = host
        self.port = port
        self.requests: list[RequestRecord] = []
        self._faults: deque[int] = deque()
        self._corrupt: dict[tuple[str, int], dict[str, Any]] = {}
        self._cache: OrderedDict[tuple[str, str, int], Bars] = OrderedDict()
        self._cache_hours = cache_hours
        self._cache_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get(ROUTE, self._aggregates)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.port = port
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> PolygonSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ faults

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` (429, 500, 504, 401, 403…) and its real body."""
        self._faults.extend([status] * times)

    def corrupt(self, symbol: str, ts: int, **fields: Any) -> None:
        """Serve the bar of ``symbol`` starting at ``ts`` (any timespan) with ``fields`` changed; None drops a field."""
        self._corrupt[(symbol, ts)] = fields

    # ------------------------------------------------------------------ data

    def _hour_bars(self, symbol: str, unit_tf: str, hour: int) -> Bars:
        key = (symbol, unit_tf, hour)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        if symbol not in self.quotes.digits:
            self.quotes = SyntheticQuotes(
                [*self.quotes.symbols, symbol], seed=self.quotes.seed, mean_interval_ms=self.quotes.mean_interval_ms
            )
        quotes = self.quotes.hour(symbol, hour)
        if quotes:
            ts, bid, ask = (np.fromiter((q[i] for q in quotes), dtype=np.float64 if i else np.int64) for i in (1, 2, 3))
            bars = aggregate_ticks(ts, bid, ask, Buckets(unit_tf), assume_sorted=True)
        else:
            bars = Bars.empty()
        with self._cache_lock:
            self._cache[key] = bars
            while len(self._cache) > self._cache_hours:
                self._cache.popitem(last=False)
        return bars

    def bars(self, symbol: str, tf_name: str, from_ms: int, to_ms: int) -> Bars:
        """The bars this server serves for ``symbol``: every bucket starting in ``[from_ms, to_ms]``."""
        buckets = Buckets(tf_name)
        unit_tf = "1s" if tf_name.endswith("s") else "1m"
        first = buckets.start(from_ms)
        last_end = buckets.end(buckets.start(to_ms))
        hours = range(first - first % HOUR_MS, last_end, HOUR_MS)
        base = Bars.concat([self._hour_bars(symbol, unit_tf, h) for h in hours])
        bars = base if tf_name == unit_tf else merge_bars(base, buckets)
        keep = (bars.ts >= from_ms) & (bars.ts <= to_ms)
        return bars.take(keep)

    def _result(self, symbol: str, bars: Bars, i: int) -> dict[str, Any]:
        n = int(bars.tick_count[i])
        row: dict[str, Any] = {
            "v": n,
            "vw": round((float(bars.high[i]) + float(bars.low[i]) + float(bars.close[i])) / 3, 6),
            "o": float(bars.open[i]),
            "c": float(bars.close[i]),
            "h": float(bars.high[i]),
            "l": float(bars.low[i]),
            "t": int(bars.ts[i]),
            "n": n,
        }
        for name, value in self._corrupt.get((symbol, row["t"]), {}).items():
            if value is None:
                row.pop(name, None)
            else:
                row[name] = value
        return row

    # ------------------------------------------------------------------ HTTP

    def _json(self, status: int, body: dict[str, Any]) -> web.Response:
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

    def _request_id(self) -> str:
        return f"sim{next(self._ids):08x}"

    def _fault(self, status: int) -> web.Response:
        if status == 504:
            return web.Response(status=504, text=GATEWAY_TIMEOUT_HTML, content_type="text/html")
        rid = self._request_id()
        if status == 429:
            return self._json(429, {"status": "ERROR", "request_id": rid, "error": RATE_LIMIT_BODY})
        if status == 401:
            return self._json(401, {"status": "ERROR", "request_id": rid, "error": "Unknown API Key"})
        if status == 403:
            return self._json(403, {"status": "NOT_AUTHORIZED", "request_id": rid, "message": NOT_ENTITLED_BODY})
        return self._json(status, {"status": "ERROR", "request_id": rid, "error": f"simulated HTTP {status}"})

    @staticmethod
    def _key_of(request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer "):]
        return request.query.get("apiKey")

    async def _aggregates(self, request: web.Request) -> web.Response:
        key = self._key_of(request)
        record: dict[str, Any] = {
            "path": request.path_qs, "symbol": None, "multiplier": None, "timespan": None, "from_ms": None,
            "to_ms": None, "cursor": "cursor" in request.query, "key": key,
        }
        response = await self._answer(request, record, key)
        self.requests.append(RequestRecord(**record, status=response.status))
        return response

    async def _answer(self, request: web.Request, record: dict[str, Any], key: str | None) -> web.Response:
        info, query = request.match_info, request.query
        if self._faults:
            return self._fault(self._faults.popleft())
        if self.api_key is not None and key != self.api_key:
            return self._fault(401)
        ticker = info["ticker"]
        if not ticker.startswith("C:"):
            return self._json(400, {"status": "ERROR", "request_id": self._request_id(), "error": f"not a forex ticker: {ticker}"})
        symbol = normalize(ticker)
        timespan = info["timespan"]
        try:
            multiplier = int(info["multiplier"])
            from_ms = _ms(info["from_"], end_of_day=False)
            to_ms = _ms(info["to"], end_of_day=True)
            limit = min(int(query.get("limit", "5000")), 50_000)
            if "cursor" in query:
                from_ms = int(_decode_cursor(query["cursor"])["from"])
            tf_name = f"{multiplier}{UNITS[timespan]}"
            timeframe(tf_name)
        except (KeyError, ValueError, TypeError) as exc:
            return self._json(400, {"status": "ERROR", "request_id": self._request_id(), "error": f"bad request: {exc}"})
        record.update(symbol=symbol, multiplier=multiplier, timespan=timespan, from_ms=from_ms, to_ms=to_ms)
        if timespan in self.forbidden:
            return self._fault(403)
        bars = await asyncio.to_thread(self.bars, symbol, tf_name, from_ms, to_ms)
        buckets = Buckets(tf_name)
        base_per_bar = max(1, (buckets.end(int(bars.ts[0])) - int(bars.ts[0])) // MINUTE_MS) if len(bars) else 1
        per_page = max(1, min(self.page_size, limit // base_per_bar))
        page = bars.take(slice(0, per_page))
        body: dict[str, Any] = {
            "ticker": ticker,
            "queryCount": len(page),
            "resultsCount": len(page),
            "adjusted": query.get("adjusted", "true") != "false",
        }
        if len(page):
            results = [self._result(symbol, page, i) for i in range(len(page))]
            body["results"] = results[::-1] if query.get("sort") == "desc" else results
        body["status"] = "OK"
        body["request_id"] = self._request_id()
        body["count"] = len(page)
        if len(bars) > per_page:
            next_from = int(bars.ts[per_page])
            passthrough = {k: v for k, v in query.items() if k in ("adjusted", "sort", "limit")}
            params = "&".join(f"{k}={v}" for k, v in {"cursor": _encode_cursor({"from": next_from}), **passthrough}.items())
            body["next_url"] = f"{self.url}/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{next_from}/{info['to']}?{params}"
        return self._json(200, body)

    def fetched(self, *, cursor: bool | None = False, status: int | None = 200) -> list[tuple[str, str, int, int]]:
        """``(symbol, "multiplier/timespan", from_ms, to_ms)`` of the requests answered (first pages by default)."""
        return [
            (r.symbol or "", f"{r.multiplier}/{r.timespan}", r.from_ms or 0, r.to_ms or 0)
            for r in self.requests
            if (cursor is None or r.cursor == cursor) and (status is None or r.status == status)
        ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.polygon_historical.simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--key", default=None, help="the only API key accepted (default: any)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mean-interval-ms", type=int, default=2000)
    parser.add_argument("--page-size", type=int, default=50_000)
    args = parser.parse_args(argv)

    sim = PolygonSimulator(
        seed=args.seed, mean_interval_ms=args.mean_interval_ms, api_key=args.key, page_size=args.page_size, port=args.port
    )
    return serve_until_interrupted(sim.start, sim.stop, "Polygon simulator on {url}")

if __name__ == "__main__":
    raise SystemExit(main())
