"""Real servers for the tests: NATS (JetStream), tansu (Kafka protocol), PostgreSQL and Redis.

Each fixture yields a started :class:`framework.infra.LocalServer`; use ``.url`` (``nats://…``,
``host:port`` bootstrap for Kafka, ``postgresql://user:pass@…/fxflow``, ``redis://…/0``),
``.port``, ``.kill()``, ``.restart()``. The session-scoped ones (``nats_server``, ``kafka_server``,
``postgres_server``, ``redis_server``) are shared, so tests must not stop them and should
namespace their subjects, topics, tables and keys. A test that kills or restarts its server
takes the function-scoped variant (``nats_server_fn``, ``kafka_server_fn``,
``postgres_server_fn``, ``redis_server_fn``). When a server's package is not installed the
test is skipped, or fails when ``FXFLOW_REQUIRE_SERVERS=1`` (as ``tasks.py test`` sets it);
any other start-up failure is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import pytest

from framework.infra import (
    KafkaServer,
    LocalServer,
    NatsServer,
    PostgresServer,
    RedisServer,
    ServerUnavailable,
)

from transport_helpers import server_unavailable

S = TypeVar("S", bound=LocalServer)


def _serve(cls: type[S], factory: pytest.TempPathFactory, **kwargs: Any) -> Iterator[S]:
    try:
        server = cls(factory.mktemp(cls.name), **kwargs)
    except ServerUnavailable as exc:
        server_unavailable(f"{cls.name} server unavailable: {exc}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    yield from _serve(NatsServer, tmp_path_factory)


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    yield from _serve(KafkaServer, tmp_path_factory)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    yield from _serve(PostgresServer, tmp_path_factory, durable=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from _serve(RedisServer, tmp_path_factory)


@pytest.fixture
def nats_server_fn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    yield from _serve(NatsServer, tmp_path_factory)


@pytest.fixture
def kafka_server_fn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    yield from _serve(KafkaServer, tmp_path_factory)


@pytest.fixture
def postgres_server_fn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    yield from _serve(PostgresServer, tmp_path_factory, durable=False)


@pytest.fixture
def redis_server_fn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from _serve(RedisServer, tmp_path_factory)
