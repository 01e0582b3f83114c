"""Waiting and recording helpers shared by the transport tests (conformance and per-transport)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import NoReturn

import pytest

from framework.transport.base import Headers, Message


def server_unavailable(reason: str) -> NoReturn:
    """Skip a test whose server cannot start, or fail it where servers are required.

    ``tasks.py test`` (CI) sets ``FXFLOW_REQUIRE_SERVERS=1``: there a missing server must not
    turn the transport conformance suite green by skipping it.
    """
    if os.environ.get("FXFLOW_REQUIRE_SERVERS", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (FXFLOW_REQUIRE_SERVERS is set)", pytrace=False)
    pytest.skip(reason)


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait for ``predicate``: the deadline is for a hang, not a speed limit (the machine may be loaded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.002)


class Inbox:
    """A subscriber that records what it is given."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Message, Headers | None]] = []

    async def __call__(self, subject: str, payload: Message, headers: Headers | None) -> None:
        self.received.append((subject, payload, headers))

    @property
    def subjects(self) -> list[str]:
        return [s for s, _, _ in self.received]

    @property
    def payloads(self) -> list[Message]:
        return [p for _, p, _ in self.received]

    def has(self, n: int) -> Callable[[], bool]:
        return lambda: len(self.received) >= n

    def got_subject(self, subject: str) -> Callable[[], bool]:
        return lambda: subject in self.subjects
