"""Updates to every open page, without ever waiting for one.

:meth:`Hub.broadcast` encodes an update once and puts it in each page's :class:`ClientQueue`
and returns; a sender task per page takes what is queued and writes it to the WebSocket at
the page's pace. A queue is bounded: an update with a conflation key replaces the one still
waiting under that key (a page that is behind gets the latest quote, not every one), and
when the queue is full the oldest update goes (counted). So a slow or stalled browser costs
memory up to its bound and nothing else: neither the node's handlers nor the publishers wait.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from typing import Any

import orjson

log = logging.getLogger("fxflow.dashboard")


class ClientQueue:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._unique = itertools.count()
        self._ready = asyncio.Event()
        self.dropped = 0
        self.conflated = 0
        self.sent = 0
        self.high_water = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str | None, data: bytes) -> None:
        items = self._items
        slot: Any = ("#", next(self._unique)) if key is None else key
        if slot in items:
            del items[slot]
            self.conflated += 1
        elif len(items) >= self.size:
            items.popitem(last=False)
            self.dropped += 1
        items[slot] = data
        if len(items) > self.high_water:
            self.high_water = len(items)
        self._ready.set()

    async def take(self, most: int) -> list[bytes]:
        """At least one update (waits for it), at most ``most``, oldest first."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        out = []
        items = self._items
        while items and len(out) < most:
            out.append(items.popitem(last=False)[1])
        self.sent += len(out)
        return out

    @property
    def stats(self) -> dict[str, int]:
        return {"queued": len(self), "high_water": self.high_water, "sent": self.sent, "dropped": self.dropped, "conflated": self.conflated}


class Hub:
    """The open pages and what goes to each."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.clients: dict[int, ClientQueue] = {}
        self._ids = itertools.count(1)
        self._closers: dict[int, Any] = {}
        self.dropped_before = 0
        """Updates dropped for pages that have gone since."""

    def join(self, close: Any) -> tuple[int, ClientQueue]:
        """A new page: its id and queue; ``close()`` (a coroutine function) ends its connection."""
        client = next(self._ids)
        queue = self.clients[client] = ClientQueue(self.queue_size)
        self._closers[client] = close
        return client, queue

    def leave(self, client: int) -> None:
        queue = self.clients.pop(client, None)
        self._closers.pop(client, None)
        if queue is not None:
            self.dropped_before += queue.dropped

    def broadcast(self, key: str | None, update: dict[str, Any]) -> None:
        if not self.clients:
            return
        data = _encoded(update)
        if data is None:
            return
        for queue in self.clients.values():
            queue.put(key, data)

    def send_to(self, client: int, key: str | None, update: dict[str, Any]) -> None:
        queue = self.clients.get(client)
        data = _encoded(update) if queue is not None else None
        if queue is not None and data is not None:
            queue.put(key, data)

    async def disconnect_all(self) -> None:
        """Close every page's connection from the server side (the pages reconnect)."""
        for close in list(self._closers.values()):
            try:
                await close()
            except Exception:
                pass

    @property
    def dropped(self) -> int:
        return self.dropped_before + sum(q.dropped for q in self.clients.values())

    def stats(self) -> list[dict[str, int]]:
        return [{"client": c, **q.stats} for c, q in self.clients.items()]


def _encoded(update: dict[str, Any]) -> bytes | None:
    """The update as JSON for the pages, or None (logged) if it cannot be: one bad value must not break a page."""
    try:
        return orjson.dumps(update, default=str)
    except (TypeError, orjson.JSONEncodeError) as exc:
        log.warning("dashboard: an update of type %s cannot be sent to the pages: %s", update.get("t"), exc)
        return None
