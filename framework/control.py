"""A command-line verb talking to a running service: one request on its control subject.

Plugin verbs (entry-point group ``fxflow.commands``) live with their nodes, which never import
a transport; this is how such a verb reaches a service running in another process, as
``fxrun risk halt`` reaches the risk gate's control port. The reply is the responder's handler
return value (request/reply, as ``ctx.request``). An in-process topology shares its bus with
no other process, so there it is :class:`Unreachable` at once: the verb falls back on what the
service reads without a bus (the risk gate: a file in its service directory).

A service takes operator commands on ``control.<service>`` (an input bound there); the lint
counts that subject as published (by ``fxrun``), as it counts ``deadletter.<service>`` (by the
runtime). Static apart from :func:`request`, which loads a transport only when called.
"""

from __future__ import annotations

from typing import Any

from framework.errors import FxflowError
from framework.topology.model import Topology

__all__ = ["PREFIX", "Unreachable", "request", "subject"]

PREFIX = "control"


def subject(service: str) -> str:
    """The subject an operator's verb sends ``service`` its commands on."""
    return f"{PREFIX}.{service}"


class Unreachable(FxflowError):
    """No service answered: the bus is in-process, nobody subscribes to the subject, or no reply came in time."""


async def request(topology: Topology, subject: str, message: dict[str, Any], *, timeout: float = 5.0, client: str = "fxrun") -> dict[str, Any]:
    """Send ``message`` on ``subject`` over the topology's bus and return the reply.

    Raises :class:`Unreachable` when nobody answers; a server that cannot be reached raises the
    transport's error (one line from ``fxrun``)."""
    if topology.runtime.pubsub != "nats":
        raise Unreachable(f"the bus is {topology.runtime.pubsub}: no other process shares it")
    from framework.transport.base import NoResponders
    from framework.transport.factory import make_pubsub

    bus = make_pubsub(topology, service=client)
    await bus.connect()
    try:
        return await bus.request(subject, message, None, timeout)
    except (NoResponders, TimeoutError) as exc:
        raise Unreachable(str(exc)) from None
    finally:
        await bus.close()
