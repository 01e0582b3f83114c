"""Local servers (NATS, a Kafka-protocol broker and its object store, PostgreSQL, Redis) run without Docker.

Used by the test fixtures (``tests/conftest.py``) and by ``fxrun infra up|status|down``.
"""

from framework.infra.servers import (
    KafkaServer,
    LocalServer,
    NatsServer,
    ObjectStoreServer,
    PostgresServer,
    RedisServer,
    ServerError,
    ServerUnavailable,
    free_port,
)

__all__ = [
    "KafkaServer",
    "LocalServer",
    "NatsServer",
    "ObjectStoreServer",
    "PostgresServer",
    "RedisServer",
    "ServerError",
    "ServerUnavailable",
    "free_port",
]
