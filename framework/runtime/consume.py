"""A service's Kafka input: fetch, hand each record to its node, commit only what was handled."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from framework.transport.base import LogConsumer, TransportError

if TYPE_CHECKING:
    from framework.runtime.core import Runtime
    from framework.runtime.dispatch import Deliver
    from framework.runtime.host import ServiceHost

log = logging.getLogger("fxflow.runtime")


async def consume(rt: Runtime, host: ServiceHost, consumer: LogConsumer, deliver: Deliver) -> None:
    """At-least-once: commit only what was handled (or dead-lettered by its handler).

    Each record is handed over through the node's mailbox and the loop waits until it was
    handled (a record merely queued is not committed). Nothing is fetched before the node
    runs, and a record whose node is restarting waits for it. If the node will not run
    again (the process is stopping mid-restart, or the node gave up), the loop commits what
    was handled and leaves the rest uncommitted, so the group redelivers it to the next run
    instead of dead-lettering a backlog. On a requested stop the loop ends after the current
    batch; when the run ends because every source finished, it first drains what is already
    in the log (nothing is left behind in a backtest, whose log is not persisted).
    """
    handle: Any = getattr(deliver, "request", None) or deliver
    if await host.wait_for_node() is None:
        return
    while True:
        stopping = rt.stopping
        if stopping and not rt.draining:
            return
        records = await consumer.getmany(timeout_ms=0 if stopping else 200, max_records=500)
        handled: dict[tuple[str, int], int] = {}
        for record in records:
            if (host.node is None or host.restarting) and await host.wait_for_node() is None:
                await commit(consumer, handled)
                if host.metrics.state == "failed":
                    log.error("service %s failed; its records from %s stay uncommitted for the next run", host.name, record.topic)
                return
            await handle(f"{record.topic}[{record.partition}]@{record.offset}", record.value, record.headers)
            handled[(record.topic, record.partition)] = record.offset + 1
        if records:
            await commit(consumer, handled)
        elif stopping:
            return


async def commit(consumer: LogConsumer, offsets: dict[tuple[str, int], int]) -> None:
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except TransportError as exc:
        log.warning("commit failed (%s); the group will redeliver those records", exc)
