"""Bounded input buffers for slow consumers (``buffer:`` on an input binding).

The transport's callback only puts the message in the buffer and returns, so a slow node
(a dashboard pushing to browsers, a notifier waiting on an SMTP server) never holds up the
service that published it; a worker hands the buffered messages to the node's mailbox one
by one. When the buffer is full the policy decides: ``block`` makes the callback wait for
room (nothing is lost; the publisher feels it), ``drop_oldest`` discards the oldest message,
``conflate`` keeps only the newest message per ``key`` value (a dashboard needs the last
price of each symbol, not every tick). Dropped and conflated messages are counted.

On simulated time there is no buffer: every delivery goes through the driver's queue, in
order, and a slow handler only makes the run longer, never changes what it computes.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Any

from framework.runtime.dispatch import Deliver
from framework.topology.model import BufferSpec
from framework.transport.base import isolated


class InputBuffer:
    def __init__(self, deliver: Deliver, spec: BufferSpec, name: str) -> None:
        self.deliver = deliver
        self.spec = spec
        self.name = name
        self._items: deque[tuple[str, Any, Any]] = deque()
        self._latest: OrderedDict[Any, tuple[str, Any, Any]] = OrderedDict()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0
        self.conflated = 0
        self.high_water = 0

    @property
    def stats(self) -> dict[str, Any]:
        return {"size": len(self), "high_water": self.high_water, "dropped": self.dropped, "conflated": self.conflated}

    def __len__(self) -> int:
        return len(self._latest) if self.spec.policy == "conflate" else len(self._items)

    def callback(self) -> Deliver:
        async def put(origin: str, message: Any, headers: Any = None) -> None:
            spec = self.spec
            if spec.policy == "conflate":
                key = message.get(spec.key) if isinstance(message, dict) else None
                if key in self._latest:
                    self.conflated += 1
                    del self._latest[key]
                elif len(self._latest) >= spec.size:
                    self._latest.popitem(last=False)
                    self.dropped += 1
                self._latest[key] = (origin, message, headers)
            else:
                while spec.policy == "block" and len(self._items) >= spec.size:
                    self._room.clear()
                    await self._room.wait()
                if len(self._items) >= spec.size:
                    self._items.popleft()
                    self.dropped += 1
                self._items.append((origin, message, headers))
            self.high_water = max(self.high_water, len(self))
            self._ready.set()
            if self._worker is None:
                self._worker = asyncio.create_task(self._drain(), name=f"{self.name}.buffer")

        return isolated(put)

    def _pop(self) -> tuple[str, Any, Any] | None:
        if self.spec.policy == "conflate":
            return self._latest.popitem(last=False)[1] if self._latest else None
        item = self._items.popleft() if self._items else None
        self._room.set()
        return item

    async def _drain(self) -> None:
        while not self._closing:
            await self._ready.wait()
            self._ready.clear()
            while (item := self._pop()) is not None:
                await self.deliver(*item)

    async def close(self) -> None:
        """Hand over what is still buffered (the delivery under way included), then stop the worker."""
        self._closing = True
        self._ready.set()
        if self._worker is not None:
            await self._worker
            self._worker = None
        while (item := self._pop()) is not None:
            await self.deliver(*item)
