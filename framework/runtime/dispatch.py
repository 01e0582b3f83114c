"""How work reaches a node on the wall clock: one message at a time per node, through its mailbox.

A delivery appends to the node's mailbox. If the node is idle, the caller (a transport's
callback, a publisher in the same process, a timer) becomes the node's runner and handles
the mailbox until it is empty; if the node is busy, the delivery returns at once and the
running runner takes it in turn. So a node never runs two handlers at once, over NATS as
in-process, and never re-enters itself (a paper broker's fill published inside execution's
submit handler waits in execution's mailbox until the submit is done), while an idle node
costs its publisher no task switch. A node whose spec says ``concurrent=True`` skips the
mailbox.

On simulated time the :class:`~framework.runtime.simulation.SimulationDriver` takes this
role with one mailbox for the whole run (first in, first out, in event-time order).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from framework.transport.base import isolated

if TYPE_CHECKING:
    from framework.runtime.host import Handle, ServiceHost
    from framework.runtime.offload import Then, Work

Deliver = Callable[..., Awaitable[None]]


class Stopwatch:
    """Handler latency without the handlers that ran inside it.

    Inline delivery in one process runs a subscriber on its publisher's stack; the time of
    such nested handlers is subtracted from the enclosing one, per task."""

    __slots__ = ("_stacks",)

    def __init__(self) -> None:
        self._stacks: dict[asyncio.Task[Any] | None, list[float]] = {}

    def enter(self) -> tuple[list[float], float]:
        task = asyncio.current_task()
        stack = self._stacks.get(task)
        if stack is None:
            stack = self._stacks[task] = []
        stack.append(0.0)
        return stack, time.perf_counter()

    def leave(self, frame: tuple[list[float], float]) -> float:
        stack, started = frame
        total = time.perf_counter() - started
        nested = stack.pop()
        if stack:
            stack[-1] += total
        elif len(self._stacks) > 64:
            self._stacks = {t: s for t, s in self._stacks.items() if s}
        return total - nested


class TimerHandle:
    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task

    def cancel(self) -> None:
        self.task.cancel()


class LiveDispatch:
    """Per-node mailboxes on the wall clock (see the module docstring)."""

    simulated = False

    def __init__(self, clock: Any) -> None:
        self.clock = clock

    def deliverer(self, host: ServiceHost, handle: Handle) -> Deliver:
        if host.spec.concurrent:
            async def direct(origin: str, message: Any, headers: Any = None) -> None:
                await handle(origin, message, headers)

            direct.request = handle  # type: ignore[attr-defined]
            return isolated(direct)
        mailbox = host.mailbox

        async def deliver(origin: str, message: Any, headers: Any = None) -> None:
            mailbox.append((handle, origin, message, headers, None))
            if not host.busy:
                await self.run_mailbox(host)

        async def request(origin: str, message: Any, headers: Any = None) -> Any:
            reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            mailbox.append((handle, origin, message, headers, reply))
            if not host.busy:
                await self.run_mailbox(host)
            return await reply

        deliver.request = request  # type: ignore[attr-defined]
        return isolated(deliver)

    @staticmethod
    async def run_mailbox(host: ServiceHost) -> None:
        host.busy = True
        mailbox = host.mailbox
        try:
            while mailbox:
                handle, origin, message, headers, reply = mailbox.popleft()
                if reply is None:
                    await handle(origin, message, headers)
                    continue
                try:
                    result = await handle(origin, message, headers)
                except BaseException as exc:
                    if not reply.done():
                        reply.set_exception(exc)
                    raise
                if not reply.done():
                    reply.set_result(result)
        finally:
            host.busy = False

    def start_timer(
        self, host: ServiceHost, method: str, seconds: float, fire: Callable[[], Awaitable[None]] | None = None
    ) -> TimerHandle:
        work = fire or host.timer_handle(method)

        async def tick(origin: str, message: Any, headers: Any = None) -> None:
            await work()

        deliver = self.deliverer(host, tick)
        name = method or "snapshot"

        async def loop() -> None:
            while True:
                await self.clock.sleep(seconds)
                await deliver(f"timer:{name}", None)

        return TimerHandle(asyncio.create_task(loop(), name=f"{host.name}.{name}"))

    def start_run(self, host: ServiceHost, run: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.create_task(run, name=f"{host.name}.run")

    async def background(self, host: ServiceHost, name: str, work: Work, then: Then, failed: Then | None) -> None:
        """Run ``work`` as a task; its outcome reaches ``then`` (or ``failed``) through the mailbox."""
        cause = host.ctx._cause

        async def run() -> None:
            try:
                outcome, fn = await work(), then
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outcome, fn = exc, failed

            async def call(origin: str, message: Any, headers: Any = None) -> None:
                await host.callback(fn, outcome, origin, cause)

            await self.deliverer(host, call)(f"background:{name}", None)

        task = asyncio.create_task(run(), name=f"{host.name}.background.{name}")
        host.tasks.append(task)
        task.add_done_callback(lambda t: host.tasks.remove(t) if t in host.tasks else None)

    def publisher(self, bus: Any) -> Any:
        """The bus as nodes publish on it: as it is (inline, in the order of the subscriptions)."""
        return bus

    def source_finished(self) -> None:
        """Nothing to do live: sources do not drive the wall clock."""

    async def close(self) -> None:
        return None
