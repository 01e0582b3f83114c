"""A local Polygon/Massive forex WebSocket server: the real protocol, synthetic quotes, faults on demand.

It speaks protocols.md section 1: ``[{"ev":"status","status":"connected",…}]`` on open, then
``auth`` → ``auth_success`` (or ``auth_failed`` and a close), one ``success`` status frame per
subscribed topic (``C.EUR/USD`` or the wildcard ``C.*``; ``auth_required`` before auth), then
data frames, each a JSON array of several ``C`` events. A new connection kicks the previous
one with ``max_connections`` (one connection per key, as the real cluster does). ``greeting`` and ``auth_reply`` can be set
to the variants the spec and old servers use (``success``).

Quotes come from :class:`~nodes.marketdata.synthetic.SyntheticQuotes` between ``start_ms`` and
``end_ms`` through one cursor shared by every connection, so a reconnecting client resumes
where the feed is now (what it missed is lost, as on the real feed). Pacing is either
``fast`` (as fast as the client reads: tests and the demo on a simulated clock, where the
quotes' own times drive the clock) or ``realtime`` (each quote sent when its time comes,
counted from the first subscription, and re-stamped to the wall clock so it looks live).

Tests inject faults through :class:`Faults`: a rejected key, disconnects after N data frames
(a dropped TCP connection or a disconnect status then a close), feed time lost while the
client is away, raw frames (malformed JSON, unknown events…) and crossed quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import WSMsgType, web

from nodes.marketdata.symbols import normalize, slashed
from nodes.marketdata.synthetic import Quote, SyntheticQuotes

EXCHANGE_ID = 48
LATE_S = 1.0
"""Realtime pacing: on a new subscription, quotes more than this late (nobody was reading) are skipped."""
STATUS_TEXT = {
    "max_connections": "Maximum number of connections exceeded.",
    "force_disconnect": "Connection forcibly disconnected.",
    "slow_consumer": "Slow consumer: the buffer for this connection is full.",
}


def frame(*events: Mapping[str, Any]) -> str:
    """One server frame: a JSON array of events."""
    return orjson.dumps(list(events)).decode()


def status(status: str, message: str) -> dict[str, str]:
    return {"ev": "status", "status": status, "message": message}


def quote_event(symbol: str, ts: int, bid: Any, ask: Any, exchange: int | str = EXCHANGE_ID) -> dict[str, Any]:
    """A ``C`` event as Polygon sends it (``p`` in slash form)."""
    return {"ev": "C", "p": slashed(symbol), "x": exchange, "a": ask, "b": bid, "t": ts}


@dataclass(frozen=True, slots=True)
class Disconnect:
    """End connection number N (0-based) after it received ``after_frames`` data frames.

    ``status`` None closes the TCP connection without a WebSocket close frame; ``max_connections``,
    ``force_disconnect`` or ``slow_consumer`` sends that status first, then closes.
    """

    after_frames: int
    status: str | None = None


@dataclass(slots=True)
class Faults:
    reject_auth: bool = False
    disconnects: dict[int, Disconnect] = field(default_factory=dict)
    """Connection number (0-based, in order of arrival) → when and how it ends."""
    lost_on_disconnect_ms: int = 0
    """Feed time skipped after an injected disconnect (quotes the client misses while away)."""
    inject: dict[int, list[str]] = field(default_factory=dict)
    """Data frame number (0-based, over the whole feed) → raw frames sent just before it."""
    silent: dict[int, int] = field(default_factory=dict)
    """Connection number → data frames after which it goes silent: no data, no pong (a dead link)."""
    crossed_every: int = 0
    """Every Nth quote (1-based count over the feed) is sent crossed (bid and ask swapped)."""
    kick_previous: bool = True


@dataclass(slots=True)
class SimulatorStats:
    connections: int = 0
    auth_attempts: int = 0
    auth_rejected: int = 0
    subscribe_requests: list[str] = field(default_factory=list)
    frames_sent: int = 0
    quotes_sent: int = 0
    disconnects: int = 0
    sent: list[Quote] = field(default_factory=list)
    """Every quote sent, as sent (crossed ones swapped), when ``record`` is on."""
    crossed: list[Quote] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Connection:
    number: int
    ws: web.WebSocketResponse
    request: web.Request
    authed: bool = False
    topics: set[str] = field(default_factory=set)
    wildcard: bool = False
    frames: int = 0
    sender: asyncio.Task[None] | None = None

    def wants(self, symbol: str) -> bool:
        return self.wildcard or symbol in self.topics


class PolygonSimulator:
    """``async with PolygonSimulator([...], start_ms=…, end_ms=…) as sim: sim.url``"""

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        start_ms: int,
        end_ms: int | None = None,
        seed: int = 7,
        mean_interval_ms: int = 2000,
        digits: Mapping[str, int] | None = None,
        pace: Literal["fast", "realtime"] = "fast",
        events_per_frame: int = 10,
        api_key: str | None = None,
        faults: Faults | None = None,
        close_when_done: bool = False,
        record: bool = True,
        greeting: str = "connected",
        auth_reply: str = "auth_success",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if events_per_frame < 1:
            raise ValueError("events_per_frame must be at least 1")
        self.quotes = SyntheticQuotes(symbols, seed=seed, mean_interval_ms=mean_interval_ms, digits=digits)
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.pace = pace
        self.events_per_frame = events_per_frame
        self.api_key = api_key
        self.faults = faults or Faults()
        self.close_when_done = close_when_done
        self.greeting = greeting
        self.auth_reply = auth_reply
        self.record = record
        self.host = host
        self.port = port
        self.stats = SimulatorStats()
        self.finished = False
        """True once the feed has no quote left (a finite ``end_ms``)."""
        self._feed: Iterator[Quote] = self._quotes()
        self._pending: Quote | None = None
        self._quote_count = 0
        self._last_feed_ts: int | None = None
        self._data_frames = 0
        self._active: _Connection | None = None
        self._connections: set[_Connection] = set()
        self._runner: web.AppRunner | None = None
        self._anchor_wall_ms: int | None = None
        self._anchor_mono = 0.0
        self._feed_lock = asyncio.Lock()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/forex"

    async def __aenter__(self) -> PolygonSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/forex", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.url

    async def close(self) -> None:
        for conn in list(self._connections):
            if conn.sender is not None:
                conn.sender.cancel()
            with contextlib.suppress(Exception):
                await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ feed

    def prime(self) -> None:
        """Compute the feed's first hour now (it takes a moment at high rates), not on the first send."""
        if self._pending is None:
            self._pending = self._next()

    def _quotes(self) -> Iterator[Quote]:
        end = self.end_ms
        if end is not None:
            yield from self.quotes.between(self.start_ms, end)
            return
        hour = 3_600_000
        for n in itertools.count():
            lo = self.start_ms + n * hour
            yield from self.quotes.between(lo, lo + hour)

    def _next(self) -> Quote | None:
        if self._pending is not None:
            quote, self._pending = self._pending, None
            return quote
        return next(self._feed, None)

    def _skip_until(self, ts: int) -> None:
        while (quote := self._next()) is not None:
            if quote.ts >= ts:
                self._pending = quote
                return

    def _skip_missed(self) -> None:
        """Realtime: drop what fell due while no client was subscribed (lost, as on the real feed)."""
        while (quote := self._next()) is not None:
            if self._due_in(quote) > -LATE_S:
                self._pending = quote
                return

    def _stamp(self, quote: Quote) -> Quote:
        self._last_feed_ts = quote.ts
        if self.pace == "realtime":
            quote = quote._replace(ts=quote.ts - self.start_ms + (self._anchor_wall_ms or 0))
        self._quote_count += 1
        if self.faults.crossed_every and self._quote_count % self.faults.crossed_every == 0:
            quote = quote._replace(bid=quote.ask, ask=quote.bid)
            if quote.bid == quote.ask:
                quote = quote._replace(bid=round(quote.bid * 1.001, 6))
            self.stats.crossed.append(quote)
        return quote

    def feed_time(self, ts: int) -> int:
        """The feed's own time of a quote sent stamped ``ts``: realtime pace stamps quotes with the wall clock from the
        first subscription on, so a position to resume from must be kept in the feed's window, not in wall time."""
        if self.pace == "realtime" and self._anchor_wall_ms is not None:
            return ts - self._anchor_wall_ms + self.start_ms
        return ts

    def _due_in(self, quote: Quote) -> float:
        """Seconds until ``quote`` is due (realtime pacing); 0 when fast."""
        if self.pace == "fast":
            return 0.0
        due = self._anchor_mono + (quote.ts - self.start_ms) / 1000.0
        return due - asyncio.get_running_loop().time()

    async def _batch(self, conn: _Connection) -> list[Quote] | None:
        """The next frame's quotes for ``conn``; None when the feed is over."""
        batch: list[Quote] = []
        while len(batch) < self.events_per_frame:
            quote = self._next()
            if quote is None:
                return batch or None
            wait = self._due_in(quote)
            if wait > 0:
                if batch:
                    self._pending = quote
                    return batch
                self._pending = quote
                await asyncio.sleep(wait)
                continue
            if conn.wants(quote.symbol):
                batch.append(self._stamp(quote))
        return batch

    # ------------------------------------------------------------------ protocol

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        number = self.stats.connections
        self.stats.connections += 1
        ws = web.WebSocketResponse(autoping=number not in self.faults.silent)
        await ws.prepare(request)
        conn = _Connection(number, ws, request)
        self._connections.add(conn)
        previous, self._active = self._active, conn
        if previous is not None and self.faults.kick_previous:
            await self._end(previous, "max_connections")
        try:
            await ws.send_str(frame(status(self.greeting, "Connected Successfully")))
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                if not await self._on_message(conn, msg.data):
                    break
        finally:
            if conn.sender is not None and conn.sender is not asyncio.current_task():
                conn.sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await conn.sender
            self._connections.discard(conn)
            if self._active is conn:
                self._active = None
        return ws

    async def _on_message(self, conn: _Connection, text: str) -> bool:
        """Handle one client message; False ends the connection."""
        ws = conn.ws
        try:
            message = orjson.loads(text)
            action, params = message["action"], str(message.get("params", ""))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await ws.send_str(frame(status("error", "invalid message")))
            return True
        if action == "auth":
            self.stats.auth_attempts += 1
            if self.faults.reject_auth or (self.api_key is not None and params != self.api_key):
                self.stats.auth_rejected += 1
                await ws.send_str(frame(status("auth_failed", "authentication failed")))
                await ws.close()
                return False
            conn.authed = True
            await ws.send_str(frame(status(self.auth_reply, "authenticated")))
        elif action in ("subscribe", "unsubscribe"):
            if not conn.authed:
                await ws.send_str(frame(status("auth_required", "authentication required")))
                return True
            if action == "subscribe":
                self.stats.subscribe_requests.append(params)
            for topic in filter(None, (t.strip() for t in params.split(","))):
                channel, _, ticker = topic.partition(".")
                if channel == "C":
                    if ticker == "*":
                        conn.wildcard = action == "subscribe"
                    elif action == "subscribe":
                        conn.topics.add(normalize(ticker))
                    else:
                        conn.topics.discard(normalize(ticker))
                verb = "subscribed to" if action == "subscribe" else "unsubscribed to"
                await ws.send_str(frame(status("success", f"{verb}: {topic}")))
            if conn.sender is None and (conn.topics or conn.wildcard):
                conn.sender = asyncio.create_task(self._send(conn), name=f"polygon-sim-{conn.number}")
        else:
            await ws.send_str(frame(status("error", f"unknown action {action!r}")))
        return True

    async def _send(self, conn: _Connection) -> None:
        if self.pace == "realtime":
            if self._anchor_wall_ms is None:  # pacing counts from the first subscription (once the feed is computed)
                self.prime()
                self._anchor_wall_ms = int(time.time() * 1000)
                self._anchor_mono = asyncio.get_running_loop().time()
            else:
                self._skip_missed()
        fault = self.faults.disconnects.get(conn.number)
        silent_after = self.faults.silent.get(conn.number)
        try:
            while not conn.ws.closed:
                if fault is not None and conn.frames >= fault.after_frames:
                    await self._end(conn, fault.status)
                    return
                if silent_after is not None and conn.frames >= silent_after:
                    return
                async with self._feed_lock:
                    for raw in self.faults.inject.pop(self._data_frames, ()):
                        await conn.ws.send_str(raw)
                    batch = await self._batch(conn)
                    if batch is None:
                        self.finished = True
                        if self.close_when_done:
                            await conn.ws.close(code=1000, message=b"feed finished")
                        return
                    if not batch:
                        continue
                    events = [quote_event(q.symbol, q.ts, q.bid, q.ask, EXCHANGE_ID if i % 2 else str(EXCHANGE_ID)) for i, q in enumerate(batch)]
                    await conn.ws.send_str(frame(*events))
                    self._data_frames += 1
                conn.frames += 1
                self.stats.frames_sent += 1
                self.stats.quotes_sent += len(batch)
                if self.record:
                    self.stats.sent.extend(batch)
                await asyncio.sleep(0)
        except (ConnectionResetError, RuntimeError):
            return

    async def _end(self, conn: _Connection, status_name: str | None) -> None:
        """Disconnect ``conn``: a dropped TCP connection (``None``) or a status then a close."""
        self.stats.disconnects += 1
        if self.faults.lost_on_disconnect_ms and self._last_feed_ts is not None:
            self._skip_until(self._last_feed_ts + self.faults.lost_on_disconnect_ms)
        if status_name is None:
            transport = conn.request.transport
            if transport is not None:
                transport.close()  # TCP FIN without a WebSocket close frame: what the client sees of a lost link
            return
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await conn.ws.send_str(frame(status(status_name, STATUS_TEXT.get(status_name, status_name))))
            await conn.ws.close(code=1008, message=status_name.encode())
