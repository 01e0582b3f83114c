"""Transports chosen by the topology's ``runtime`` section; client libraries load only when chosen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from framework.errors import UserError
from framework.topology.model import Topology
from framework.transport.base import LogTransport, PubSubTransport

Undecodable = Callable[[str, bytes, str], Any]
"""``on_undecodable(origin, raw, reason)``: a message no codec could read (sent to the dead letters)."""


def make_pubsub(topology: Topology, *, service: str, on_undecodable: Undecodable | None = None) -> PubSubTransport:
    kind = topology.runtime.pubsub
    if kind == "inprocess":
        from framework.transport.inprocess import InProcessPubSub

        return InProcessPubSub(wire=topology.runtime.wire_codec)
    if topology.nats is None:
        raise UserError("runtime.pubsub is 'nats' but the topology has no `nats:` section", path="nats")
    from framework.transport.nats import NatsPubSub

    return NatsPubSub(topology.nats, name=f"fxflow-{service}", service=service, on_undecodable=on_undecodable)


def make_log(
    topology: Topology, *, service: str, data_dir: Path, on_undecodable: Undecodable | None = None
) -> LogTransport:
    kind = topology.runtime.log
    if kind == "inprocess":
        from framework.transport.inprocess import InProcessLog

        # written through: a record is on disk (the kernel's, which outlives the process) when it is
        # acknowledged, as a broker's acknowledgement means it is stored
        return InProcessLog(
            data_dir / "log" if topology.runtime.persist_log else None, flush_every=1, max_records=topology.runtime.log_max_records
        )
    if topology.kafka is None:
        raise UserError("runtime.log is 'kafka' but the topology has no `kafka:` section", path="kafka")
    from framework.transport.kafka import KafkaLog

    def record_undecodable(topic: str, partition: int, offset: int, raw: bytes, reason: str) -> None:
        if on_undecodable is not None:
            on_undecodable(f"{topic}[{partition}]@{offset}", raw, reason)

    return KafkaLog(topology.kafka, client_id=topology.kafka.client_id, service=service, on_undecodable=record_undecodable)
