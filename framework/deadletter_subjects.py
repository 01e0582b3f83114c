"""Where the runtime publishes dead letters: subject, variable and contract, and nothing else.

Static on purpose: lint and docgen read these names to know what the runtime publishes on its
own (``deadletter.<service>`` for every service), without importing the runtime code that
writes and publishes the dead letters (:mod:`framework.deadletter`).
"""

from __future__ import annotations

SUBJECT_PREFIX = "deadletter"
VARIABLE = "service"
SUBJECT_TEMPLATE = f"{SUBJECT_PREFIX}.{{{VARIABLE}}}"
"""``deadletter.{service}``, as the generated documents show it."""
CONTRACT = "dead_letter.v1"
TRANSPORT_SERVICE = "transport"
"""The service name undecodable messages are dead-lettered under (no node could read them)."""


def subject(service: str) -> str:
    """The subject the dead letters of ``service`` are published on."""
    return f"{SUBJECT_PREFIX}.{service}"
