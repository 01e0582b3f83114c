"""Fixtures of the transport conformance suite.

Every transport implementation must pass ``tests/conformance`` unchanged. To add one,
add a single entry to :data:`PUBSUB_FACTORIES` or :data:`LOG_FACTORIES`: a callable that
takes the test's ``tmp_path`` and returns an async context manager yielding a *connected*
transport and closing it on exit. A factory whose server is not reachable should call
``pytest.skip`` so the suite still runs offline, e.g.::

    @asynccontextmanager
    async def nats_pubsub(tmp_path: Path) -> AsyncIterator[PubSubTransport]:
        url = os.environ.get("FXFLOW_NATS_URL") or pytest.skip("FXFLOW_NATS_URL not set")
        async with _connected(NatsPubSub(url)) as transport:
            yield transport

    PUBSUB_FACTORIES["nats"] = nats_pubsub

Tests share nothing but the server: every subject, topic and group name starts with the
per-test :func:`uid`, so a real broker can keep state between tests and runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from framework.transport.base import LogConsumer, LogTransport, PubSubTransport
from framework.transport.inprocess import InProcessLog, InProcessPubSub
from transport_helpers import server_unavailable

T = TypeVar("T", PubSubTransport, LogTransport)

PubSubFactory = Callable[[Path], AbstractAsyncContextManager[PubSubTransport]]
LogFactory = Callable[[Path], AbstractAsyncContextManager[LogTransport]]
JoinGroup = Callable[..., Awaitable[LogConsumer]]


@asynccontextmanager
async def _connected(transport: T) -> AsyncIterator[T]:
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.close()


def inprocess_pubsub(tmp_path: Path) -> AbstractAsyncContextManager[PubSubTransport]:
    return _connected(InProcessPubSub())


def inprocess_wire_pubsub(tmp_path: Path) -> AbstractAsyncContextManager[PubSubTransport]:
    """Through the NATS codec, as the demo runs."""
    return _connected(InProcessPubSub(wire=True))


def inprocess_log(tmp_path: Path) -> AbstractAsyncContextManager[LogTransport]:
    return _connected(InProcessLog())


def inprocess_log_on_disk(tmp_path: Path) -> AbstractAsyncContextManager[LogTransport]:
    """Persistent variant; a small ``flush_every`` exercises the periodic write path too."""
    return _connected(InProcessLog(tmp_path / "log", flush_every=3))


_KAFKA_SERVER: list[str] = []


def kafka_log(tmp_path: Path) -> AbstractAsyncContextManager[LogTransport]:
    """KafkaLog on ``FXFLOW_KAFKA_BOOTSTRAP``, else on one tansu started for the whole run.

    Short group timings, since tansu holds every JoinGroup for half the session timeout.
    """
    import os

    from framework.infra import KafkaServer, ServerUnavailable
    from framework.topology.model import KafkaConfig
    from framework.transport.kafka import KafkaLog

    if not _KAFKA_SERVER:
        bootstrap = os.environ.get("FXFLOW_KAFKA_BOOTSTRAP")
        if not bootstrap:
            try:
                bootstrap = KafkaServer(tmp_path / "kafka-server").start().url
            except ServerUnavailable as exc:
                server_unavailable(f"kafka server unavailable: {exc}")
        _KAFKA_SERVER.append(bootstrap)
    config = KafkaConfig(bootstrap=_KAFKA_SERVER[0].split(","))
    return _connected(KafkaLog(config, session_timeout_ms=2_000, heartbeat_interval_ms=250, fetch_max_wait_ms=100))


_NATS_SERVER: list[str] = []


def nats_pubsub(tmp_path: Path) -> AbstractAsyncContextManager[PubSubTransport]:
    """NatsPubSub (core NATS) on ``FXFLOW_NATS_URL``, else on one nats-server started for the whole run."""
    import os

    from framework.infra import NatsServer, ServerUnavailable
    from framework.topology.model import NatsConfig
    from framework.transport.nats import NatsPubSub

    if not _NATS_SERVER:
        url = os.environ.get("FXFLOW_NATS_URL")
        if not url:
            try:
                url = NatsServer(tmp_path / "nats-server").start().url
            except ServerUnavailable as exc:
                server_unavailable(f"nats server unavailable: {exc}")
        _NATS_SERVER.append(url)
    return _connected(NatsPubSub(NatsConfig(servers=_NATS_SERVER[0].split(",")), name="fxflow-conformance"))


PUBSUB_FACTORIES: dict[str, PubSubFactory] = {
    "inprocess": inprocess_pubsub,
    "inprocess-wire": inprocess_wire_pubsub,
    "nats": nats_pubsub,
}

LOG_FACTORIES: dict[str, LogFactory] = {
    "inprocess": inprocess_log,
    "inprocess-disk": inprocess_log_on_disk,
    "kafka": kafka_log,
}


@pytest.fixture(params=list(PUBSUB_FACTORIES))
async def pubsub(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PubSubTransport]:
    async with PUBSUB_FACTORIES[request.param](tmp_path) as transport:
        yield transport


@pytest.fixture(params=list(LOG_FACTORIES))
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogTransport]:
    async with LOG_FACTORIES[request.param](tmp_path) as transport:
        yield transport


@pytest.fixture
def uid() -> str:
    """A name prefix unique to this test, valid as a subject token, topic and group name."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def join(log: LogTransport) -> AsyncIterator[JoinGroup]:
    """``await join(group, topics, **kw)``: a started group member, stopped after the test."""
    members: list[LogConsumer] = []

    async def start(group: str, topics: Iterable[str], **kwargs: str) -> LogConsumer:
        consumer = log.consumer(group, list(topics), **kwargs)
        await consumer.start()
        members.append(consumer)
        return consumer

    yield start
    for consumer in reversed(members):
        await consumer.stop()
