"""NATS pub/sub transport: core NATS for live subjects, JetStream for durable ones.

:class:`NatsPubSub` implements :class:`~framework.transport.base.PubSubTransport` over
nats-py. Payloads are ``dict`` messages encoded as JSON by :mod:`framework.transport.codec`;
headers pass through.

Subjects matching one of ``NatsConfig.durable`` are kept in JetStream: one stream per
durable pattern (``signals.>`` → stream ``FXFLOW_SIGNALS``), published with ``js.publish``
(the PubAck is awaited, retried with the same ``Nats-Msg-Id`` so the server drops
duplicates) and consumed through durable push consumers acknowledged after the handler
returns (at-least-once). A consumer is named after the service, the pattern and the queue
group (which becomes its deliver group); created, it starts with what is published from
then on, and keeps its position across restarts of the service and of the server.
Everything else is plain core NATS (at-most-once).

The connection reconnects forever with capped exponential backoff and jitter. While it is
down, core publishes are buffered up to ``NatsConfig.reconnect_buffer_bytes`` and sent on
reconnect; a publish that does not fit raises :class:`PublishBufferFullError` (never blocks,
never drops silently). Disconnects, reconnects and the gaps between them are counted and
logged; URLs are logged without credentials and secrets are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client, Server
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as CoreSubscription
from nats.errors import (
    AuthorizationError,
    BadSubscriptionError,
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    NoRespondersError,
    NoServersError,
    OutboundBufferLimitError,
    SlowConsumerError,
)
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext, api
from nats.js.errors import (
    APIError,
    BadRequestError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.nuid import NUID

from framework.errors import UserError
from framework.outage import Outage
from framework.subjects import (
    SubjectError,
    SubjectIndex,
    check_subject,
    covers,
    intersects,
    validate_pattern,
)
from framework.topology.model import NatsConfig
from framework.transport.base import (
    Handler,
    Headers,
    Message,
    NoResponders,
    PubSubTransport,
    Subscription,
    TransportClosedError,
    TransportError,
)
from framework.transport.codec import DecodeError, decode, encode

__all__ = [
    "DurablePublishError",
    "DurableStream",
    "NatsPubSub",
    "NatsTransportError",
    "PublishBufferFullError",
    "message_id",
    "plan_streams",
    "redact_url",
    "server_urls",
    "stream_name",
]

logger = logging.getLogger(__name__)

Undecodable = Callable[[str, bytes, str], Any]
"""``on_undecodable(subject, raw, reason)``; may be a plain function or a coroutine function."""

MsgIdFunction = Callable[[str, Message], "str | None"]

MSG_ID_HEADER = "Nats-Msg-Id"
ID_FIELDS: tuple[str, ...] = (
    "id",
    "event_id",
    "message_id",
    "fill_id",
    "decision_id",
    "signal_id",
    "alert_id",
    "notification_id",
    "order_id",
)
"""Payload fields naming a message, in order of preference, for the default :func:`message_id`."""

_ROUTE_CACHE_SIZE = 100_000
_RECONNECT_BASE_DELAY = 0.05
_CONNECT_RETRY_WAIT = 0.5
_API_TIMEOUT = 10.0
_FLUSH_POLL_S = 0.05
_ACK_TIMEOUT = 5.0
_MAX_DELIVER = 5
"""Deliveries of a message whose handler keeps raising before it is terminated. Enforced here,
not by the consumer's ``max_deliver``, which would also count redeliveries after restarts."""
_NAK_DELAY = 1.0
_MAX_GAPS = 1000
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_ERR_STREAM_NAME_IN_USE = 10058
_ERR_STREAM_SUBJECTS_OVERLAP = 10065


class NatsTransportError(TransportError):
    """A NATS operation failed in a way the caller should see (not a programming error)."""


class PublishBufferFullError(NatsTransportError):
    """A publish while disconnected did not fit in the reconnect buffer."""


class DurablePublishError(NatsTransportError):
    """JetStream did not acknowledge a durable publish in time (or refused it)."""


@dataclass(frozen=True, slots=True)
class DurableStream:
    """The JetStream stream that keeps the subjects of one durable pattern."""

    name: str
    pattern: str


def redact_url(url: str) -> str:
    """``url`` without its user-info part (user, password or token)."""
    try:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def server_urls(servers: Iterable[str]) -> list[str]:
    """The server URLs of ``nats.servers``, where one entry may hold several separated by commas.

    ``FXFLOW_NATS_URL`` fills a single entry in ``topology/live.yaml``, so a cluster's nodes
    arrive as ``nats://a:4222,nats://b:4222``; nats-py wants one URL per list item.
    """
    urls = [url.strip() for entry in servers for url in entry.split(",")]
    urls = list(dict.fromkeys(url for url in urls if url))
    if not urls:
        raise UserError("no server URL (is FXFLOW_NATS_URL empty?)", path="nats.servers")
    return urls


def stream_name(pattern: str, prefix: str = "FXFLOW") -> str:
    """``signals.>`` → ``FXFLOW_SIGNALS``; ``a.*.b`` → ``FXFLOW_A_STAR_B``; ``>`` → ``FXFLOW_ALL``."""
    toks = pattern.split(".")
    if toks[-1] == ">":
        toks = toks[:-1]
    words = ["STAR" if t == "*" else _NAME_SAFE.sub("_", t).upper() for t in toks] or ["ALL"]
    return "_".join([prefix, *words])


def plan_streams(patterns: Iterable[str], prefix: str = "FXFLOW") -> list[DurableStream]:
    """One stream per durable pattern; a pattern inside another one is kept by the outer stream.

    JetStream refuses two streams sharing a subject, so patterns that overlap without one
    containing the other (``a.*.c`` and ``a.b.>``) are a :class:`UserError`, as are two
    patterns whose derived stream names collide.
    """
    unique = list(dict.fromkeys(patterns))
    for pattern in unique:
        reason = _pattern_problem(pattern)
        if reason:
            raise UserError(f"nats.durable: {reason}", path="nats.durable")
    kept: list[str] = []
    for pattern in unique:
        outer = next((o for o in unique if o != pattern and covers(o, pattern)), None)
        if outer is not None:
            logger.info("nats.durable: %r is inside %r and is kept by its stream", pattern, outer)
            continue
        kept.append(pattern)
    for i, a in enumerate(kept):
        for b in kept[i + 1 :]:
            if intersects(a, b):
                raise UserError(
                    f"nats.durable: patterns {a!r} and {b!r} overlap but neither contains the other; "
                    "JetStream cannot keep one subject in two streams: merge them into one pattern",
                    path="nats.durable",
                )
    streams = [DurableStream(stream_name(p, prefix), p) for p in kept]
    seen: dict[str, str] = {}
    for s in streams:
        if s.name in seen:
            raise UserError(
                f"nats.durable: patterns {seen[s.name]!r} and {s.pattern!r} both map to stream {s.name}; "
                "rename one of them",
                path="nats.durable",
            )
        seen[s.name] = s.pattern
    return streams


def _pattern_problem(pattern: str) -> str | None:
    try:
        validate_pattern(pattern)
    except SubjectError as exc:
        return str(exc)
    return None


def message_id(subject: str, payload: Message) -> str | None:
    """The default ``Nats-Msg-Id`` of a durable publish, or ``None`` if the message has no id.

    The subject is part of it because one id may appear on several subjects of one stream
    (an order's ``order_id`` on ``orders.submitted.*`` and ``orders.filled.*``), and ``ts``
    because one entity may emit several events on one subject. A retry of the same message
    yields the same id, which is all JetStream's de-duplication needs.
    """
    for field in ID_FIELDS:
        value = payload.get(field)
        if value is None or value == "" or isinstance(value, bool) or not isinstance(value, (str, int)):
            continue
        ts = payload.get("ts")
        key = f"{subject}|{field}={value}" if ts is None else f"{subject}|{field}={value}|ts={ts}"
        if len(key) > 200 or not key.isprintable():
            return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return key
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _log_undecodable(subject: str, raw: bytes, reason: str) -> None:
    logger.error("NATS: undecodable message on %s (%d bytes): %s", subject, len(raw), reason)


class _NatsSubscription(Subscription):
    """One subscription; ``on_core``/``on_durable`` are the nats-py callbacks.

    nats-py runs a subscription's callbacks one at a time in one task, so ``_busy`` is the
    whole in-flight state. ``unsubscribe`` drains, as NATS does: the server stops sending,
    then every message it had already sent is handled (so, within one process, nothing
    published before the unsubscribe is lost: the runtime's producers-first stop relies on
    it), and nothing is delivered after it returns. A drain that outlasts ``drain_timeout``,
    or one begun while disconnected, skips what is left (durable messages are nak'ed for
    prompt redelivery) once the running handler has finished.
    """

    def __init__(
        self,
        owner: NatsPubSub,
        pattern: str,
        queue: str | None,
        handler: Handler,
        stream: DurableStream | None = None,
        consumer: str | None = None,
    ) -> None:
        self.pattern = pattern
        self.queue = queue
        self.stream = stream
        self.consumer = consumer
        self.active = True
        self._unsubscribed = False
        self.slot: tuple[str, int] | None = None
        self._owner = owner
        self._handler = handler
        self._busy = False
        self._task: asyncio.Task[Any] | None = None
        self._idle: asyncio.Event | None = None
        self.core: CoreSubscription | None = None

    def __repr__(self) -> str:
        kind = f" durable={self.consumer!r}" if self.consumer else ""
        return f"<NatsSubscription {self.pattern!r} queue={self.queue!r}{kind} active={self.active}>"

    async def on_core(self, msg: Msg) -> None:
        if not self.active:
            return
        try:
            payload = decode(msg.data)
        except DecodeError as exc:
            await self._owner._undecodable(msg.subject, msg.data, str(exc))
            return
        if self._task is None:
            self._task = asyncio.current_task()
        self._busy = True
        try:
            if msg.reply:
                await self._answer(msg, payload)
            else:
                await self._handler(msg.subject, payload, msg.headers)
        except Exception:
            logger.exception("NATS: subscriber of %r (queue %r) failed on %s", self.pattern, self.queue, msg.subject)
        finally:
            self._busy = False
            if self._idle is not None:
                self._idle.set()

    async def _answer(self, msg: Msg, payload: Message) -> None:
        """A request: the handler's return value (through its ``request``, for a mailbox) is the reply."""
        answer = getattr(self._handler, "request", None)
        reply = await (answer(msg.subject, payload, msg.headers) if answer else self._handler(msg.subject, payload, msg.headers))
        if isinstance(reply, dict):
            await msg.respond(encode(reply, msg.reply))
        else:
            logger.debug("NATS: the subscriber of %r does not answer requests on %s", self.pattern, msg.subject)

    async def on_durable(self, msg: Msg) -> None:
        if not self.active:
            await _settle(msg.nak)
            return
        try:
            payload = decode(msg.data)
        except DecodeError as exc:
            await self._owner._undecodable(msg.subject, msg.data, str(exc))
            await _settle(msg.term)
            return
        headers = msg.headers
        if headers and MSG_ID_HEADER in headers:
            headers = {k: v for k, v in headers.items() if k != MSG_ID_HEADER} or None
        if self._task is None:
            self._task = asyncio.current_task()
        self._busy = True
        try:
            try:
                await self._handler(msg.subject, payload, headers)
            except Exception:  # noqa: BLE001 - logged by _failed, then nak'ed for redelivery
                settle = self._failed(msg)
            else:
                settle = msg.ack
            await _settle(settle)
        finally:
            self._busy = False
            if self._idle is not None:
                self._idle.set()

    def _failed(self, msg: Msg) -> Callable[[], Any]:
        """Log the handler's exception (call inside ``except``); the settle action: nak, or term at the end."""
        try:
            attempt = msg.metadata.num_delivered
        except Exception:  # noqa: BLE001 - metadata is only for the log line
            attempt = 0
        final = attempt >= _MAX_DELIVER
        logger.exception(
            "NATS: durable subscriber of %r (consumer %s) failed on %s (delivery %d of %d)%s",
            self.pattern,
            self.consumer,
            msg.subject,
            attempt,
            _MAX_DELIVER,
            "; giving up on this message" if final else "; it will be redelivered",
        )
        return msg.term if final else lambda: msg.nak(delay=_NAK_DELAY)

    async def unsubscribe(self) -> None:
        if self._unsubscribed:
            return
        self._unsubscribed = True
        self._owner._forget(self)
        if self._busy and asyncio.current_task() is self._task:
            self._owner._spawn(self.drain(), f"nats-unsubscribe {self.pattern}")
            return
        await self.drain()

    async def drain(self) -> None:
        core = self.core
        nc = self._owner._nc
        timeout = self._owner._drain_timeout
        if core is not None and nc is not None and nc.is_connected:
            try:
                await asyncio.wait_for(core.drain(), timeout)
            except TimeoutError:
                logger.warning(
                    "NATS: unsubscribing %r: %d message(s) still queued after %.0fs are skipped",
                    self.pattern,
                    core.pending_msgs,
                    timeout,
                )
                _abandon(core)
            except NatsError as exc:
                logger.debug("NATS: draining %r failed (%s); unsubscribing", self.pattern, exc)
            else:
                self.core = None
        self.active = False
        await self.release(timeout)

    async def release(self, timeout: float | None = None) -> None:
        """Wait for the running handler, then remove the server-side interest."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._busy:
            if self._idle is None:
                self._idle = asyncio.Event()
            self._idle.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._idle.wait(), remaining)
            except TimeoutError:
                break
        core, self.core = self.core, None
        if core is not None:
            try:
                await core.unsubscribe()
            except (ConnectionClosedError, ConnectionDrainingError, BadSubscriptionError):
                _abandon(core)


def _forget_flush(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(flush: asyncio.Future[Any]) -> None:
        tasks.discard(flush)  # type: ignore[arg-type]
        if not flush.cancelled() and flush.exception() is not None:
            logger.debug("NATS: an abandoned flush failed: %s", flush.exception())

    return done


def _abandon(core: CoreSubscription) -> None:
    """Stop a nats-py subscription whose ``drain`` was cut short.

    nats-py marks it closed when the drain is cancelled, after which ``unsubscribe`` refuses
    to run, so its processing task would linger until the connection closes.
    """
    stop = getattr(core, "_stop_processing", None)
    if stop is not None:
        stop()
    conn, sid = getattr(core, "_conn", None), getattr(core, "_id", None)
    if conn is not None and sid is not None:
        conn._remove_sub(sid)


async def _settle(action: Callable[[], Any]) -> None:
    """Ack/nak/term a JetStream message; failures only mean the server will redeliver it."""
    try:
        await action()
    except NatsError as exc:
        logger.debug("NATS: could not acknowledge a JetStream message: %s", exc)


class NatsPubSub(PubSubTransport):
    """NATS pub/sub for one process (``service``), connected to ``config.servers`` (see :func:`server_urls`).

    ``name`` labels the connection in the server's monitoring. ``service`` names the process in
    errors and, with the subscribed pattern (and queue group), the durable JetStream consumers,
    so a restarted service resumes where it stopped; it defaults to ``name``.

    ``on_undecodable(subject, raw, reason)`` receives every message whose payload is not a JSON
    object (the runtime sends it to the dead letters); the subscription carries on.
    ``msg_id(subject, payload)`` gives the ``Nats-Msg-Id`` of durable publishes (default
    :func:`message_id`; a ``Nats-Msg-Id`` header given by the caller wins); without one, a
    fresh id per ``publish`` call still de-duplicates that call's own retries. The header is
    the transport's business: subscribers do not see it, so durable and live subjects deliver
    the same headers (and a handler forwarding its headers cannot forward a stale id).

    ``close()`` waits for running handlers, so a handler must not call it.

    Counters: ``disconnects``, ``reconnects``, ``publish_errors``, ``slow_consumer_drops``,
    ``undecodable``, ``duplicates`` (durable publishes JetStream had already stored) and
    ``gaps``, the ``(disconnected_at, reconnected_at)`` epoch seconds of every outage (the
    last 1000).
    """

    def __init__(
        self,
        config: NatsConfig,
        *,
        name: str = "fxflow",
        service: str | None = None,
        on_undecodable: Undecodable | None = None,
        msg_id: MsgIdFunction = message_id,
        stream_prefix: str = "FXFLOW",
        connect_attempts: int = 2,
        connect_timeout: float = 2.0,
        reconnect_max_delay: float = 5.0,
        durable_publish_timeout: float = 30.0,
        drain_timeout: float = 30.0,
    ) -> None:
        if connect_attempts < 2:
            raise ValueError("connect_attempts must be at least 2 (nats-py tries each server at least twice)")
        self.config = config
        self.name = name
        self.service = service or name
        self.streams = plan_streams(config.durable, stream_prefix)
        self._on_undecodable: Undecodable = on_undecodable or _log_undecodable
        self._msg_id = msg_id
        self._connect_attempts = connect_attempts
        self._fatal_connect = asyncio.Event()
        self._connect_timeout = connect_timeout
        self._reconnect_max_delay = reconnect_max_delay
        self._durable_publish_timeout = durable_publish_timeout
        self._drain_timeout = drain_timeout
        self._durable_index: SubjectIndex[DurableStream] = SubjectIndex()
        for stream in self.streams:
            self._durable_index.add(stream.pattern, stream)
        self.servers = server_urls(config.servers)
        self._urls = ", ".join(redact_url(u) for u in self.servers)

        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._routes: dict[str, DurableStream | None] = {}
        self._subs: set[_NatsSubscription] = set()
        self._consumers: dict[tuple[str, str], api.ConsumerConfig] = {}
        self._consumer_slots: dict[str, set[int]] = {}
        self._warned_partial: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restore: asyncio.Task[None] | None = None
        self._nuid = NUID()
        self._up = asyncio.Event()
        self._closing = False
        self._connecting = False
        self._last_error: BaseException | None = None
        self._connect_errors: list[BaseException] = []
        self._outage = self._new_outage()
        self._reconnect_attempt = 0

        self.disconnects = 0
        self.reconnects = 0
        self.publish_errors = 0
        self.slow_consumer_drops = 0
        self.undecodable = 0
        self.duplicates = 0
        self.gaps: list[tuple[float, float]] = []

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed" if self._nc is None else "disconnected"
        return f"<NatsPubSub {self.service!r} {self._urls} {state}>"

    # --- state --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def buffered_bytes(self) -> int:
        """Bytes waiting to be written to the server (the reconnect buffer while disconnected)."""
        return self._nc.pending_data_size if self._nc is not None else 0

    def stats(self) -> dict[str, Any]:
        last = self.gaps[-1] if self.gaps else None
        return {
            "connected": self.connected,
            "disconnects": self.disconnects,
            "reconnects": self.reconnects,
            "publish_errors": self.publish_errors,
            "slow_consumer_drops": self.slow_consumer_drops,
            "undecodable": self.undecodable,
            "duplicates": self.duplicates,
            "buffered_bytes": self.buffered_bytes,
            "last_gap_s": None if last is None else round(last[1] - last[0], 3),
            "down_for_s": None if self._outage.started_at is None else round(time.time() - self._outage.started_at, 3),
        }

    def _new_outage(self) -> Outage:
        """Disconnected until reconnected: logged when it begins, every 30 s while it lasts, and when it ends."""

        def still(o: Outage) -> str:
            reason = f"; last error: {_one_line(self._last_error)}" if self._last_error is not None else ""
            return (
                f"NATS: {self.service} still disconnected from {self._urls} after {o.duration:.0f}s "
                f"({self._reconnect_attempt - 1} attempts){reason}"
            )

        def ended(o: Outage) -> str:
            nc = self._nc
            url = redact_url(_url_of(nc)) if nc is not None else self._urls
            return f"NATS: {self.service} reconnected to {url} after a {o.duration:.3f}s gap"

        return Outage(
            logger,
            began=lambda o: (
                f"NATS: {self.service} disconnected from {self._urls}; reconnecting, "
                f"publishes buffered up to {self.config.reconnect_buffer_bytes} bytes"
            ),
            still=still,
            ended=ended,
            began_level=logging.WARNING,
            initial=_RECONNECT_BASE_DELAY,
            maximum=self._reconnect_max_delay,
            jitter=(0.5, 1.0),
        )

    # --- connection -----------------------------------------------------------------------

    async def connect(self) -> None:
        if self._nc is not None:
            return
        credentials = self._credentials()
        tls = self._tls_context()
        self._closing = False
        self._connecting = True
        self._last_error = None
        self._connect_errors = []
        self._outage = self._new_outage()
        self._reconnect_attempt = 0
        nc = Client()
        self._fatal_connect = asyncio.Event()
        try:
            await self._connect_or_fail_fast(
                nc,
                servers=list(self.servers),
                name=self.name,
                tls=tls,
                allow_reconnect=True,
                max_reconnect_attempts=max(self._connect_attempts - 1, 1),
                reconnect_time_wait=_CONNECT_RETRY_WAIT,  # type: ignore[arg-type]
                connect_timeout=self._connect_timeout,  # type: ignore[arg-type]
                ping_interval=10,
                max_outstanding_pings=3,
                pending_size=self.config.reconnect_buffer_bytes,
                drain_timeout=self._drain_timeout,  # type: ignore[arg-type]
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
                reconnect_to_server_handler=self._next_server,
                skip_subject_validation=True,
                **credentials,
            )
        except (TimeoutError, NatsError, OSError, ValueError, ssl.SSLError) as exc:
            self._closing = True
            await nc.close()
            raise self._connect_error(exc) from None
        finally:
            self._connecting = False
            self._connect_errors = []
        # Reconnecting gives up on a server after max_reconnect_attempts; from now on it
        # never does (our _next_server paces the attempts instead).
        nc.options["max_reconnect_attempts"] = -1
        self._nc = nc
        self._js = nc.jetstream(timeout=_API_TIMEOUT)
        self._up.set()
        if self.streams:
            try:
                await self._ensure_streams()
            except BaseException:
                self._closing = True
                await nc.close()
                self._nc = self._js = None
                raise
        logger.info("NATS: %s connected to %s", self.service, redact_url(_url_of(nc)))

    async def _connect_or_fail_fast(self, nc: Client, **options: Any) -> None:
        """``nc.connect`` that gives up at the first certificate failure.

        A certificate that does not verify will not verify on the next attempt either, and
        nats-py can stall after a failed TLS handshake instead of trying again, so the
        error callback flags it and the attempt is abandoned with that error.
        """
        connecting = asyncio.ensure_future(nc.connect(**options))
        fatal = asyncio.ensure_future(self._fatal_connect.wait())
        try:
            await asyncio.wait({connecting, fatal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            fatal.cancel()
        if not connecting.done():
            connecting.cancel()
            try:
                await connecting
            except (asyncio.CancelledError, Exception):
                pass
            raise self._connect_errors[-1]
        connecting.result()

    def _credentials(self) -> dict[str, str]:
        auth = self.config.auth
        if auth is None:
            return {}
        if auth.token_env and (auth.user_env or auth.password_env):
            raise UserError("set either user_env/password_env or token_env, not both", path="nats.auth")
        if auth.token_env:
            return {"token": _env(auth.token_env, "nats.auth.token_env")}
        if auth.user_env or auth.password_env:
            if not (auth.user_env and auth.password_env):
                raise UserError("user_env and password_env go together", path="nats.auth")
            return {
                "user": _env(auth.user_env, "nats.auth.user_env"),
                "password": _env(auth.password_env, "nats.auth.password_env"),
            }
        return {}

    def _tls_context(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if tls is None:
            return None
        for field, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
            if path is not None and not os.path.isfile(path):
                raise UserError(f"file not found: {path}", path=f"nats.tls.{field}")
        if (tls.cert is None) != (tls.key is None):
            raise UserError("cert and key go together", path="nats.tls")
        try:
            context = ssl.create_default_context(cafile=tls.ca)
            if tls.cert is not None:
                context.load_cert_chain(tls.cert, tls.key)
        except (ssl.SSLError, OSError) as exc:
            raise UserError(f"cannot load the TLS files: {_one_line(exc)}", path="nats.tls") from None
        return context

    def _connect_error(self, exc: BaseException) -> UserError:
        """One line saying why connecting failed, from the most telling error of all attempts.

        A refused login often ends in "connection reset by peer" (the server hangs up right
        after its -ERR), so an authorization or TLS failure of any attempt wins over the last.
        """
        errors = [*self._connect_errors, exc]
        cause = next((e for e in errors if _is_auth_error(e)), None)
        cause = cause or next((e for e in errors if _is_tls_error(e)), None)
        if cause is None:
            cause = self._last_error if isinstance(exc, NoServersError) and self._last_error is not None else exc
        text = _one_line(cause)
        where = f"service {self.service!r} cannot connect to NATS at {self._urls}"
        if _is_auth_error(cause):
            auth = self.config.auth
            if auth is None:
                hint = "the server requires credentials: set nats.auth (user_env/password_env or token_env)"
            elif auth.token_env:
                hint = f"check the token in ${auth.token_env}"
            else:
                hint = f"check ${auth.user_env} and ${auth.password_env}"
            return UserError(f"{where}: authorization violation ({hint})")
        if _is_tls_error(cause):
            return UserError(f"{where}: TLS failed ({text}); check nats.tls and the server's certificates")
        if isinstance(cause, ValueError):
            return UserError(f"{where}: invalid server URL ({text}); check nats.servers")
        return UserError(
            f"{where} ({text}): start the servers with `fxrun infra up` "
            "or point nats.servers (FXFLOW_NATS_URL) at a running one"
        )

    def _next_server(self, servers: list[Server], info: dict[str, Any]) -> tuple[Server | None, float]:
        """Reconnect pacing: every server once without waiting, then rounds with doubling delays."""
        attempt = self._reconnect_attempt
        self._reconnect_attempt += 1
        if attempt == 0:
            return servers[0], 0.0
        if self._outage.down:
            self._outage.failed(self._last_error)
        rounds = (attempt - 1) // max(len(servers), 1)
        return servers[attempt % len(servers)], self._outage.delay(rounds)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            self.slow_consumer_drops += 1
            if self.slow_consumer_drops == 1 or self.slow_consumer_drops % 1000 == 0:
                logger.warning(
                    "NATS: %s is a slow consumer on %s: %d message(s) dropped so far",
                    self.service,
                    exc.subject,
                    self.slow_consumer_drops,
                )
            return
        self._last_error = exc
        nc = self._nc
        if self._connecting:
            self._connect_errors.append(exc)
            if _is_tls_error(exc) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
                self._fatal_connect.set()
        if self._connecting or (nc is not None and nc.is_reconnecting):
            logger.debug("NATS: %s connection attempt failed: %s", self.service, _one_line(exc))
            return
        logger.warning("NATS: %s: %s", self.service, _one_line(exc))

    async def _on_disconnected(self) -> None:
        if self._closing or self._outage.down:
            return
        self.disconnects += 1
        self._up.clear()
        self._outage.failed(self._last_error)
        self._connection_changed(False)

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        self._reconnect_attempt = 0
        now = time.time()
        since = self._outage.started_at if self._outage.started_at is not None else now
        self.gaps.append((since, now))
        del self.gaps[:-_MAX_GAPS]
        self._up.set()
        self._connection_changed(True)
        self._outage.recovered()
        if self.streams:
            if self._restore is not None:
                self._restore.cancel()
            self._restore = asyncio.ensure_future(self._restore_jetstream())
            self._restore.add_done_callback(self._task_done)

    async def _on_closed(self) -> None:
        if self._closing:
            return
        self._up.clear()
        reason = f": {_one_line(self._last_error)}" if self._last_error is not None else ""
        logger.error("NATS: %s connection closed and will not reconnect%s", self.service, reason)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("NATS: background task %s failed: %s", task.get_name(), _one_line(task.exception()))  # type: ignore[arg-type]

    async def close(self) -> None:
        """Drain: stop subscriptions, let delivered messages finish, flush publishes, disconnect."""
        nc = self._nc
        if nc is None:
            return
        self._closing = True
        self._routes.clear()
        restore, self._restore = self._restore, None
        if restore is not None:
            restore.cancel()
            await asyncio.gather(restore, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        try:
            if nc.is_connected:
                try:
                    await nc.drain()
                except (TimeoutError, NatsError, OSError) as exc:
                    logger.warning("NATS: %s: drain failed (%s); closing", self.service, _one_line(exc))
            else:
                subs = list(self._subs)
                for sub in subs:
                    sub.active = False
                await asyncio.gather(*(s.release(self._drain_timeout) for s in subs), return_exceptions=True)
                if nc.pending_data_size:
                    logger.warning(
                        "NATS: %s closed while disconnected from %s: %d buffered bytes of publishes are dropped",
                        self.service,
                        self._urls,
                        nc.pending_data_size,
                    )
        finally:
            if not nc.is_closed:
                await nc.close()
            for sub in self._subs:
                sub.active = False
            self._subs.clear()
            self._consumer_slots.clear()
            self._consumers.clear()
            self._nc = self._js = None
            self._up.clear()

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything published so far reached the server (across a reconnect)."""
        nc = self._nc
        if nc is None:
            return
        try:
            if not nc.is_connected:
                await asyncio.wait_for(self._up.wait(), timeout)
            await nc.flush(timeout)  # type: ignore[arg-type]
        except (TimeoutError, NatsTimeoutError):
            raise NatsTransportError(
                f"NATS flush timed out after {timeout:.0f}s ({'connected' if nc.is_connected else 'disconnected'}, "
                f"{nc.pending_data_size} bytes not yet sent)"
            ) from None
        except ConnectionClosedError:
            raise TransportClosedError("flush on a closed NATS connection") from None

    # --- publish ----------------------------------------------------------------------------

    async def publish(self, subject: str, payload: Message, headers: Headers | None = None) -> None:
        try:
            stream = self._routes[subject]
        except (KeyError, TypeError):
            stream = self._route(subject)
        nc = self._nc
        if nc is None:
            raise TransportClosedError(f"publish to {subject!r} on a closed NATS transport")
        data = encode(payload, subject)
        if stream is not None:
            await self._publish_durable(stream, subject, payload, data, headers)
            return
        try:
            await nc.publish(subject, data, headers=None if headers is None else dict(headers))
        except OutboundBufferLimitError:
            raise self._buffer_full(subject, len(data)) from None
        except (ConnectionClosedError, ConnectionDrainingError):
            raise TransportClosedError(f"publish to {subject!r} on a closed NATS connection") from None
        except MaxPayloadError:
            self.publish_errors += 1
            raise NatsTransportError(
                f"message of {len(data)} bytes on {subject!r} exceeds the server's max_payload"
            ) from None
        except NatsError as exc:
            self.publish_errors += 1
            raise NatsTransportError(f"publish to {subject!r} failed: {_one_line(exc)}") from None

    async def request(self, subject: str, payload: Message, headers: Headers | None = None, timeout: float = 5.0) -> Message:
        nc = self._nc
        if nc is None:
            raise TransportClosedError(f"request on {subject!r} on a closed NATS transport")
        reason = check_subject(subject)
        if reason is not None:
            raise SubjectError(reason)
        try:
            msg = await nc.request(subject, encode(payload, subject), timeout=timeout, headers=None if headers is None else dict(headers))
        except NoRespondersError:
            raise NoResponders(f"no responder for a request on {subject!r}") from None
        except NatsTimeoutError:
            raise TimeoutError(f"no reply to a request on {subject!r} within {timeout:g}s") from None
        except (ConnectionClosedError, ConnectionDrainingError):
            raise TransportClosedError(f"request on {subject!r} on a closed NATS connection") from None
        try:
            return decode(msg.data)
        except DecodeError as exc:
            raise NatsTransportError(f"undecodable reply to a request on {subject!r}: {exc}") from None

    def _route(self, subject: str) -> DurableStream | None:
        """Validate a subject once and remember whether it is durable (memo cleared on close)."""
        reason = check_subject(subject)
        if reason is not None:
            raise SubjectError(reason)
        if self._nc is None:
            raise TransportClosedError(f"publish to {subject!r} on a closed NATS transport")
        found = self._durable_index.lookup(subject)
        stream = found[0] if found else None
        if len(self._routes) >= _ROUTE_CACHE_SIZE:
            self._routes.clear()
        self._routes[subject] = stream
        return stream

    def _buffer_full(self, subject: str, size: int) -> PublishBufferFullError:
        self.publish_errors += 1
        started = self._outage.started_at
        down = f" for {time.time() - started:.1f}s" if started is not None else ""
        return PublishBufferFullError(
            f"publish of {size} bytes to {subject!r} refused: disconnected from NATS ({self._urls}){down} "
            f"and the reconnect buffer (nats.reconnect_buffer_bytes={self.config.reconnect_buffer_bytes}) is full"
        )

    async def _publish_durable(
        self, stream: DurableStream, subject: str, payload: Message, data: bytes, headers: Headers | None
    ) -> None:
        js = self._js
        if js is None:
            raise TransportClosedError(f"publish to {subject!r} on a closed NATS transport")
        hdrs = dict(headers) if headers else {}
        if MSG_ID_HEADER not in hdrs:
            hdrs[MSG_ID_HEADER] = self._msg_id(subject, payload) or self._nuid.next().decode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._durable_publish_timeout
        delay = 0.05
        while True:
            remaining = deadline - loop.time()
            try:
                ack = await js.publish(subject, data, timeout=max(min(_ACK_TIMEOUT, remaining), 0.05), headers=hdrs)
            except OutboundBufferLimitError:
                raise self._buffer_full(subject, len(data)) from None
            except (ConnectionClosedError, ConnectionDrainingError):
                raise TransportClosedError(f"publish to {subject!r} on a closed NATS connection") from None
            except (TimeoutError, NatsTimeoutError, NoStreamResponseError, ServiceUnavailableError) as exc:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self.publish_errors += 1
                    raise DurablePublishError(
                        f"JetStream did not acknowledge {subject!r} (stream {stream.name}) within "
                        f"{self._durable_publish_timeout:.0f}s: {_one_line(exc)}"
                    ) from None
                logger.debug("NATS: durable publish to %s not acknowledged yet (%s); retrying", subject, exc)
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)
                continue
            except APIError as exc:
                self.publish_errors += 1
                raise DurablePublishError(
                    f"JetStream refused {subject!r} (stream {stream.name}): {exc.description or _one_line(exc)}"
                ) from None
            except NatsError as exc:
                self.publish_errors += 1
                raise DurablePublishError(f"durable publish to {subject!r} failed: {_one_line(exc)}") from None
            if ack.duplicate:
                self.duplicates += 1
            return

    # --- subscribe --------------------------------------------------------------------------

    async def subscribe(
        self, pattern: str, handler: Handler, queue: str | None = None, *, owner: str | None = None
    ) -> Subscription:
        if self._nc is None:
            raise TransportClosedError(f"subscribe to {pattern!r} on a closed NATS transport")
        validate_pattern(pattern)
        if queue is not None and (not queue or any(c.isspace() or not c.isprintable() for c in queue)):
            raise ValueError(f"invalid queue group name {queue!r}")
        stream = next((s for s in self.streams if covers(s.pattern, pattern)), None)
        if stream is None:
            sub = await self._subscribe_core(pattern, handler, queue)
        else:
            sub = await self._subscribe_durable(stream, pattern, handler, queue, owner or self.service)
        self._subs.add(sub)
        await self._flush_while_connected(f"subscribing {pattern!r}")
        return sub

    async def _flush_while_connected(self, what: str) -> None:
        """Flush so the server has the subscription before we return; give up at once when the connection drops
        meanwhile (the client sends every subscription again on reconnect; a PONG from a dead server never comes,
        and waiting the whole timeout held up a service's start by seconds)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        flush = asyncio.ensure_future(nc.flush(_API_TIMEOUT))  # type: ignore[arg-type]
        try:
            while not flush.done():
                await asyncio.wait({flush}, timeout=_FLUSH_POLL_S)
                if not flush.done() and not nc.is_connected:
                    logger.debug("NATS: connection lost while flushing after %s: it is sent again on reconnect", what)
                    return
            flush.result()
        except (NatsError, TimeoutError) as exc:
            logger.debug("NATS: flush after %s failed: %s", what, exc)
        finally:
            if not flush.done():
                if nc.is_connected:  # the caller was cancelled: nats-py still awaits the PONG into this future
                    self._tasks.add(flush)  # (cancelling it would make that PONG kill the client's read loop)
                    flush.add_done_callback(_forget_flush(self._tasks))
                else:
                    flush.cancel()  # the client drops the PONGs it waits for when it reconnects

    async def _subscribe_core(self, pattern: str, handler: Handler, queue: str | None) -> _NatsSubscription:
        assert self._nc is not None
        if pattern not in self._warned_partial and any(intersects(s.pattern, pattern) for s in self.streams):
            self._warned_partial.add(pattern)
            logger.warning(
                "NATS: %s subscribes %r, which is only partly durable (%s): it gets every message live, "
                "but nothing is replayed for it after a restart",
                self.service,
                pattern,
                ", ".join(s.pattern for s in self.streams if intersects(s.pattern, pattern)),
            )
        sub = _NatsSubscription(self, pattern, queue, handler)
        sub.core = await self._nc.subscribe(pattern, queue=queue or "", cb=sub.on_core)
        return sub

    async def _subscribe_durable(
        self, stream: DurableStream, pattern: str, handler: Handler, queue: str | None, owner: str
    ) -> _NatsSubscription:
        assert self._nc is not None and self._js is not None
        name, slot = self._consumer_name(pattern, queue, owner)
        config = api.ConsumerConfig(
            durable_name=name,
            description=f"fxflow {owner}: {pattern}" + (f" (queue {queue})" if queue else ""),
            deliver_subject=f"_FXFLOW.deliver.{stream.name}.{name}",
            deliver_group=queue,
            filter_subject=pattern,
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=30.0,
        )
        try:
            info = await self._ensure_consumer(stream, config)
        except (NatsError, TimeoutError) as exc:
            self._release_slot(slot)
            detail = exc.description if isinstance(exc, APIError) and exc.description else _one_line(exc)
            raise NatsTransportError(
                f"cannot set up the durable consumer {name} on stream {stream.name} for {pattern!r}: {detail}"
            ) from None
        if not info.config.deliver_group and info.push_bound:
            self._release_slot(slot)
            raise NatsTransportError(
                f"durable consumer {name} of {pattern!r} (stream {stream.name}) is already bound to another "
                f"subscriber: another instance of {owner!r} is running; give replicas a queue group"
            )
        deliver = info.config.deliver_subject or config.deliver_subject
        assert deliver is not None
        config.deliver_subject = deliver
        self._consumers[(stream.name, name)] = config
        sub = _NatsSubscription(self, pattern, queue, handler, stream, name)
        sub.slot = slot
        sub.core = await self._nc.subscribe(deliver, queue=info.config.deliver_group or "", cb=sub.on_durable)
        return sub

    async def _ensure_consumer(self, stream: DurableStream, config: api.ConsumerConfig) -> api.ConsumerInfo:
        assert self._js is not None and config.durable_name is not None
        try:
            return await self._js.consumer_info(stream.name, config.durable_name)
        except NotFoundError:
            return await self._js.add_consumer(stream.name, config)

    def _consumer_name(self, pattern: str, queue: str | None, owner: str | None = None) -> tuple[str, tuple[str, int] | None]:
        """The durable consumer of (service, pattern, queue): readable, stable across restarts.

        Members of one queue group share their consumer (its deliver group spreads the
        messages). Without a queue, a second subscription of the same pattern in this
        process needs every message too, so it gets its own consumer (``slot`` 1, 2, …);
        subscriptions are made in topology order, so slots are stable across restarts.
        """
        owner = owner or self.service
        key = f"{owner}\x00{pattern}\x00{queue or ''}"
        slot: tuple[str, int] | None = None
        if not queue:
            taken = self._consumer_slots.setdefault(key, set())
            index = next(i for i in range(len(taken) + 1) if i not in taken)
            taken.add(index)
            slot = (key, index)
            if index:
                key = f"{key}\x00{index}"
        digest = hashlib.blake2b(key.encode(), digest_size=4).hexdigest()
        readable = _NAME_SAFE.sub("_", f"{owner}__{pattern.replace('>', 'ALL').replace('*', 'STAR')}")
        if queue:
            readable += "__" + _NAME_SAFE.sub("_", queue)
        return f"{readable[:80]}_{digest}", slot

    def _release_slot(self, slot: tuple[str, int] | None) -> None:
        if slot is not None:
            self._consumer_slots.get(slot[0], set()).discard(slot[1])

    def _forget(self, sub: _NatsSubscription) -> None:
        self._subs.discard(sub)
        self._release_slot(sub.slot)
        stream, consumer = sub.stream, sub.consumer
        if stream is not None and consumer is not None and not any(s.consumer == consumer for s in self._subs):
            self._consumers.pop((stream.name, consumer), None)

    async def _undecodable(self, subject: str, raw: bytes, reason: str) -> None:
        self.undecodable += 1
        try:
            result = self._on_undecodable(subject, bytes(raw), reason)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("NATS: on_undecodable failed for a message on %s", subject)

    # --- JetStream set-up -------------------------------------------------------------------

    async def _ensure_streams(self) -> None:
        assert self._js is not None
        for stream in self.streams:
            try:
                await self._ensure_stream(stream)
            except ServiceUnavailableError:
                raise UserError(
                    f"service {self.service!r}: NATS at {self._urls} has no JetStream, which the durable "
                    f"subjects ({', '.join(s.pattern for s in self.streams)}) need: run nats-server with -js "
                    "(`fxrun infra up` does)",
                    path="nats.durable",
                ) from None
            except BadRequestError as exc:
                if exc.err_code == _ERR_STREAM_SUBJECTS_OVERLAP:
                    raise UserError(
                        f"durable pattern {stream.pattern!r} overlaps a stream already on the server "
                        f"({exc.description}); delete that stream or change nats.durable",
                        path="nats.durable",
                    ) from None
                raise UserError(
                    f"cannot create JetStream stream {stream.name} for {stream.pattern!r}: {exc.description}",
                    path="nats.durable",
                ) from None
            except (TimeoutError, APIError, NatsTimeoutError) as exc:
                raise UserError(
                    f"cannot create JetStream stream {stream.name} for {stream.pattern!r}: {_one_line(exc)}",
                    path="nats.durable",
                ) from None

    async def _ensure_stream(self, stream: DurableStream) -> None:
        assert self._js is not None
        config = api.StreamConfig(
            name=stream.name,
            subjects=[stream.pattern],
            storage=api.StorageType.FILE,
            description=f"fxflow durable subjects {stream.pattern}",
        )
        try:
            await self._js.add_stream(config)
        except BadRequestError as exc:
            if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                raise
            info = await self._js.stream_info(stream.name)
            if info.config.subjects != [stream.pattern]:
                logger.warning(
                    "NATS: stream %s had subjects %s; setting them to [%r]",
                    stream.name,
                    info.config.subjects,
                    stream.pattern,
                )
                await self._js.update_stream(info.config.evolve(subjects=[stream.pattern]))

    async def _restore_jetstream(self) -> None:
        """After a reconnect: recreate streams and consumers a restarted server may have lost."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60.0
        delay = 0.1
        while self._js is not None and not self._closing:
            try:
                for stream in self.streams:
                    await self._ensure_stream(stream)
                for (stream_name_, _), config in list(self._consumers.items()):
                    stream = next(s for s in self.streams if s.name == stream_name_)
                    await self._ensure_consumer(stream, config)
                return
            except (ConnectionClosedError, ConnectionDrainingError):
                return
            except (TimeoutError, NatsError) as exc:
                if loop.time() > deadline:
                    logger.error(
                        "NATS: %s could not restore JetStream after reconnecting: %s", self.service, _one_line(exc)
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


def _is_auth_error(exc: BaseException) -> bool:
    return isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower()


def _is_tls_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, ssl.SSLError) or "tls" in text or "ssl" in text


def _env(var: str, field: str) -> str:
    value = os.environ.get(var)
    if value is None or value == "":
        raise UserError(f"environment variable {var} is not set", path=field)
    return value


def _url_of(nc: Client) -> str:
    url = nc.connected_url
    return url.geturl() if url is not None else ""
