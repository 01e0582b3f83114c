"""Dead letters: a message that cannot be delivered or processed is kept with its reason.

Nothing is dropped silently: every dead letter is appended to
``<data_dir>/deadletter/<service>.jsonl`` (one ``dead_letter.v1`` record per line), counted
in the service's metrics and published on ``deadletter.<service>`` for live monitoring
(the subject names are in :mod:`framework.deadletter_subjects`, which lint and docgen read) —
except a dead letter of a dead letter, which stays on disk only (no loop through a monitor).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import orjson

from framework.deadletter_subjects import SUBJECT_PREFIX, TRANSPORT_SERVICE, subject
from framework.transport.codec import encode

__all__ = ["TRANSPORT_SERVICE", "DeadLetters"]

log = logging.getLogger(__name__)

LOGGED_PER_REASON = 20
"""Dead letters logged per service and reason in a run; the rest are counted and kept on disk (a stop that turns
away ten thousand queued messages must not bury the console)."""


def _jsonable(value: Any) -> Any:
    """``value`` if the wire can carry it (the dead letter is published too), else its repr."""
    try:
        encode(value)
        return value
    except TypeError:
        return repr(value)


class DeadLetters:
    def __init__(
        self,
        directory: Path | None,
        publish: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
        keep: int = 1000,
    ) -> None:
        self.directory = directory
        self._publish = publish
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._files: dict[str, IO[bytes]] = {}
        self._logged: dict[tuple[str, str], int] = {}
        self.count = 0

    async def put(
        self,
        service: str,
        reason: str,
        payload: Any,
        origin: str,
        ts_ms: int,
        contract: str | None = None,
    ) -> dict[str, Any]:
        record = {"ts": ts_ms, "service": service, "reason": reason, "origin": origin, "payload": _jsonable(payload)}
        if contract:
            record["contract"] = contract
        self.count += 1
        self.recent.append(record)
        if self.directory is not None:
            handle = self._files.get(service)
            if handle is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                handle = self._files[service] = open(self.directory / f"{service}.jsonl", "ab")
            handle.write(orjson.dumps(record) + b"\n")
            handle.flush()
        seen = self._logged.get((service, reason), 0) + 1
        self._logged[(service, reason)] = seen
        if seen <= LOGGED_PER_REASON:
            log.warning("dead letter from %s (%s): %s", service, origin, reason)
            if seen == LOGGED_PER_REASON:
                log.warning("dead letters from %s for this reason are not logged any more this run (all are in %s.jsonl)", service, service)
        if origin.startswith(f"{SUBJECT_PREFIX}."):
            # a dead letter that a subscriber of dead letters could not take: kept on disk, not published again,
            # or a subscriber that cannot take any (stopped, given up, failing) would feed itself without end
            return record
        if self._publish is not None:
            try:
                await self._publish(subject(service), record)
            except Exception as exc:
                log.error("could not publish dead letter of %s: %s (kept on disk)", service, exc)
        return record

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
