"""Transports: NATS-style pub/sub and Kafka-style partitioned logs behind one API."""

from framework.transport.base import (
    Handler,
    LogConsumer,
    LogTransport,
    PubSubTransport,
    Record,
    RecordMetadata,
    Subscription,
    TopicSpec,
)

__all__ = [
    "Handler",
    "LogConsumer",
    "LogTransport",
    "PubSubTransport",
    "Record",
    "RecordMetadata",
    "Subscription",
    "TopicSpec",
]
