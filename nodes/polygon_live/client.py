"""A Polygon/Massive forex WebSocket client: handshake, quote parsing, reconnects.

Wire format (protocols.md section 1): every server frame is a JSON array of events; the
client sends single JSON objects. Session: ``connected`` status → ``auth`` → ``auth_success``
(or the old ``success``) → ``subscribe`` → data frames mixing ``C`` quotes and ``status``
events. A rejected key raises :class:`AuthError` at once (retrying a bad key only gets the
account throttled). Everything else that ends a session (a drop, a heartbeat timeout, a
``max_connections`` / ``force_disconnect`` / ``slow_consumer`` status, a server that does not
answer) is followed by a reconnect with exponential back-off and jitter, a new ``auth`` and
the same ``subscribe``.

Back-off sleeps use real time (``asyncio.sleep``), never the node's clock: a simulated clock
only moves with event time, and no events arrive while the socket is down.

The API key is sent in the ``auth`` message only: it is never logged nor put in an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import aiohttp
import orjson

from nodes.marketdata.http import redact

log = logging.getLogger("fxflow.polygon_live")

AUTH_OK = frozenset({"auth_success", "success"})
DISCONNECT_STATUSES = frozenset({"max_connections", "force_disconnect", "slow_consumer"})
QUOTE_FIELDS = ("p", "a", "b", "t")
MAX_PAYLOAD_CHARS = 10_000
"""Malformed frames longer than this are cut before they reach the dead letters."""


class AuthError(Exception):
    """The server rejected the API key (``auth_failed``). Not retried."""


class ConnectionLost(Exception):
    """The client gave up: ``max_reconnects`` attempts in a row brought no data back."""


class ForexQuote(NamedTuple):
    """One ``C`` event. Prices are passed on as received; the node checks them."""

    pair: str
    bid: Any
    ask: Any
    ts: int
    exchange: int | str | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A subscribed session ended; a reconnect follows (unless the stream ends)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Authenticated and subscribed again after a :class:`Disconnected`."""

    reason: str
    """The reason of the disconnect this recovers from."""
    attempts: int


StreamItem = list[ForexQuote] | Disconnected | Reconnected


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before reconnect attempt ``n``: ``initial * multiplier**(n-1)`` capped at ``maximum``,
    then shortened by a random fraction up to ``jitter`` so clients that lost the server together
    do not come back together."""

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        exponent = min(max(attempt - 1, 0), 64)
        base = min(self.initial * self.multiplier**exponent, self.maximum)
        return base * (1.0 - self.jitter * (rng or random).random())


@dataclass(slots=True)
class ClientStats:
    connects: int = 0
    sessions: int = 0
    reconnects: int = 0
    frames: int = 0
    quotes: int = 0
    statuses: int = 0
    unknown_events: int = 0
    malformed: int = 0
    unknown_types: set[str] = field(default_factory=set)


class _SessionEnded(Exception):
    """Internal: the current connection is over, for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


MalformedCallback = Callable[[str, Any], Awaitable[None] | None]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_ms(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _exchange(value: Any) -> int | str | None:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


class PolygonForexSocket:
    """Streams quote batches (one list per frame) plus :class:`Disconnected` / :class:`Reconnected`.

    ``pairs`` are slash-form tickers (``EUR/USD``) or ``*``. ``max_reconnects`` bounds the
    reconnect attempts in a row that bring no data back (None: keep trying forever, as a
    live collector should). ``on_malformed(reason, payload)`` receives each frame that is not
    a JSON array (payload: the raw text) and each event that cannot be read (payload: the
    event); the stream goes on. ``stop_when()`` is asked after each session: True ends the
    stream instead of reconnecting (the in-process simulator uses it when its feed is over).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        pairs: Sequence[str],
        *,
        channel: str = "C",
        backoff: Backoff | None = None,
        max_reconnects: int | None = None,
        heartbeat: float | None = 30.0,
        connect_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        on_malformed: MalformedCallback | None = None,
        stop_when: Callable[[], bool] | None = None,
        logger: logging.Logger | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not pairs:
            raise ValueError("nothing to subscribe: no pairs")
        self.url = url
        self.shown_url = redact(url)
        self._api_key = api_key
        self.topics = ",".join(f"{channel}.{pair}" for pair in pairs)
        self.backoff = backoff or Backoff()
        self.max_reconnects = max_reconnects
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self._on_malformed = on_malformed
        self._stop_when = stop_when
        self.log = logger or log
        self._sleep = sleep
        self.stats = ClientStats()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._problems: list[tuple[str, Any]] = []
        self._disconnect_status: str | None = None
        self._closed = False

    def __repr__(self) -> str:  # the key must not leak through a repr in a traceback or a log
        return f"PolygonForexSocket({self.shown_url!r}, topics={self.topics!r})"

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def stream(self) -> AsyncIterator[StreamItem]:
        """Connect, authenticate, subscribe and yield until closed, stopped or given up."""
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        failures = 0
        down_reason: str | None = None
        try:
            while not self._closed:
                reason, got_data = "", False
                try:
                    self.stats.connects += 1
                    self._ws = await self._session.ws_connect(self.url, heartbeat=self.heartbeat, autoping=True)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    reason = f"cannot connect: {_describe(exc)}".replace(self.url, self.shown_url)
                else:
                    try:
                        await self._handshake(self._ws)
                        self.stats.sessions += 1
                        if down_reason is not None:
                            self.stats.reconnects += 1
                            self.log.info("polygon: reconnected to %s and resubscribed", self.shown_url)
                            yield Reconnected(down_reason, failures)
                            down_reason = None
                        else:
                            self.log.info("polygon: connected to %s, subscribed to %s", self.shown_url, self._summary())
                        async with contextlib.aclosing(self._frames(self._ws)) as frames:
                            async for batch in frames:
                                if not got_data:
                                    got_data, failures = True, 0
                                yield batch
                    except _SessionEnded as ended:
                        reason = ended.reason
                    finally:
                        if self._ws is not None:
                            await self._ws.close()
                            self._ws = None
                    if self.stats.sessions and down_reason is None and not self._closed:
                        down_reason = reason
                        if not self._stopping():
                            yield Disconnected(reason)
                if self._closed or self._stopping():
                    return
                failures += 1
                if self.max_reconnects is not None and failures > self.max_reconnects:
                    raise ConnectionLost(f"polygon: gave up after {failures - 1} reconnect attempt(s) to {self.shown_url}: {reason}")
                delay = self.backoff.delay(failures)
                self.log.warning("polygon: %s; reconnecting in %.1fs (attempt %d)", reason, delay, failures)
                await self._sleep(delay)
        finally:
            await self.close()

    def _stopping(self) -> bool:
        return self._stop_when is not None and self._stop_when()

    def _summary(self) -> str:
        topics = self.topics.split(",")
        return self.topics if len(topics) <= 4 else f"{', '.join(topics[:3])} and {len(topics) - 3} more"

    # ------------------------------------------------------------------ session

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._disconnect_status = None
        greeting = await self._receive_events(ws, "the connected status")
        for event in greeting:
            self._check_disconnect(event)
        await ws.send_str(orjson.dumps({"action": "auth", "params": self._api_key}).decode())
        while True:
            for event in await self._receive_events(ws, "the answer to auth"):
                status = event.get("status")
                message = str(event.get("message", ""))
                if status in AUTH_OK:
                    await ws.send_str(orjson.dumps({"action": "subscribe", "params": self.topics}).decode())
                    return
                if status == "auth_failed":
                    raise AuthError(f"polygon rejected the API key: {self._scrub(message) or status}")
                if status == "auth_timeout":
                    raise _SessionEnded(f"auth_timeout: {message}")
                self._check_disconnect(event)

    async def _receive_events(self, ws: aiohttp.ClientWebSocketResponse, what: str) -> list[dict[str, Any]]:
        """The status events of the next frame, during the handshake."""
        try:
            msg = await ws.receive(timeout=self.handshake_timeout)
        except TimeoutError:
            raise _SessionEnded(f"no {what} within {self.handshake_timeout:g}s") from None
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            raise _SessionEnded(self._end_reason(ws, msg))
        self.stats.frames += 1
        events = self._decode(msg.data)
        return [e for e in events or () if isinstance(e, dict) and e.get("ev") == "status"]

    def _check_disconnect(self, event: dict[str, Any]) -> None:
        status = event.get("status")
        if status in DISCONNECT_STATUSES:
            raise _SessionEnded(f"{status}: {event.get('message', '')}".rstrip(": "))

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def _frames(self, ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[list[ForexQuote]]:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                text = msg.data
            elif msg.type is aiohttp.WSMsgType.BINARY:
                text = msg.data.decode("utf-8", "replace")
            else:
                raise _SessionEnded(self._end_reason(ws, msg))
            self.stats.frames += 1
            quotes = self.parse(text)
            if self._problems:
                await self._report()
            if quotes:
                yield quotes

    def _end_reason(self, ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage) -> str:
        if self._disconnect_status:
            return self._disconnect_status
        if msg.type is aiohttp.WSMsgType.ERROR:
            return f"connection error: {_describe(msg.data) if isinstance(msg.data, BaseException) else msg.data}"
        code = ws.close_code
        return f"server closed the connection (code {code})" if code not in (None, 1006) else "connection dropped"

    async def _report(self) -> None:
        problems, self._problems = self._problems, []
        for reason, payload in problems:
            self.stats.malformed += 1
            if self._on_malformed is None:
                self.log.warning("polygon: %s", reason)
                continue
            result = self._on_malformed(reason, payload)
            if inspect.isawaitable(result):
                await result

    # ------------------------------------------------------------------ parsing

    def _decode(self, text: str) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
        try:
            return json.loads(text)  # tolerates NaN / Infinity, which the quote check then names
        except ValueError as exc:
            self._problems.append((f"frame is not JSON: {exc}", text[:MAX_PAYLOAD_CHARS]))
            return None

    def parse(self, text: str) -> list[ForexQuote]:
        """The quotes of one frame; status events are handled, unknown ones skipped, bad ones reported."""
        events = self._decode(text)
        if events is None:
            return []
        if not isinstance(events, list):
            self._problems.append((f"frame is not a JSON array but {type(events).__name__}", text[:MAX_PAYLOAD_CHARS]))
            return []
        quotes: list[ForexQuote] = []
        for event in events:
            if not isinstance(event, dict):
                self._problems.append((f"event is not a JSON object but {type(event).__name__}", event))
                continue
            ev = event.get("ev")
            if ev == "C":
                quote = self._quote(event)
                if quote is not None:
                    quotes.append(quote)
            elif ev == "status":
                self._status(event)
            elif ev is None:
                self._problems.append(("event has no 'ev' field", event))
            else:
                self.stats.unknown_events += 1
                if str(ev) not in self.stats.unknown_types:
                    self.stats.unknown_types.add(str(ev))
                    self.log.info("polygon: skipping events of unknown type %r", ev)
        self.stats.quotes += len(quotes)
        return quotes

    def _quote(self, event: dict[str, Any]) -> ForexQuote | None:
        try:
            pair, bid, ask, ts = event["p"], event["b"], event["a"], event["t"]
        except KeyError:
            missing = ", ".join(f for f in QUOTE_FIELDS if f not in event)
            self._problems.append((f"quote event missing field(s): {missing}", event))
            return None
        if type(pair) is not str or not pair:
            self._problems.append((f"quote pair 'p' is not a string: {pair!r}", event))
            return None
        if type(ts) is not int and (ts := _as_ms(ts)) is None:
            self._problems.append((f"quote time 't' is not integer milliseconds: {event['t']!r}", event))
            return None
        exchange = event.get("x")
        return ForexQuote(pair, bid, ask, ts, exchange if type(exchange) is int else _exchange(exchange), event)

    def _status(self, event: dict[str, Any]) -> None:
        self.stats.statuses += 1
        status, message = event.get("status"), str(event.get("message", ""))
        if status in DISCONNECT_STATUSES:
            self._disconnect_status = f"{status}: {message}".rstrip(": ")
            hint = {
                "max_connections": "another connection uses this key (one per cluster by default)",
                "force_disconnect": "the server ended the session",
                "slow_consumer": "the server's buffer for this client filled up; the consumer is too slow",
            }[status]
            self.log.warning("polygon: %s (%s); the server will drop this connection", self._disconnect_status, hint)
        elif status in ("error", "auth_required"):
            self.log.warning("polygon: status %s: %s", status, self._scrub(message))
        else:
            self.log.debug("polygon: status %s: %s", status, message)
