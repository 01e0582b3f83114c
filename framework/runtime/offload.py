"""Work off the event loop, and results that come back through the node's mailbox.

``ctx.offload(fn, *args)`` runs ``fn`` in a thread, or with ``process=True`` in a worker
process of the runtime's pool (CPU-heavy work: training a model must not hold the loop, nor
the GIL, for minutes), and returns its result to the awaiting handler.

``ctx.background(fn, *args, then=...)`` starts the same work and returns at once; ``then``
receives the result later as a delivery of its own, through the node's mailbox, so it never
overlaps a handler. Live, the node keeps handling its messages meanwhile. On simulated time
the work runs when its turn in the run's single queue comes, with the clock held, so a
backtest or the demo gets the same result at the same point of the run every time.

The pool starts its workers with ``spawn`` (a fork of a process with threads can deadlock)
on first use; ``fn`` and its arguments must be picklable (a module-level function). Results
cross back by pickle from a child this process started: nothing is read that another
process could have written.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any


class Offloader:
    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, fn: Callable[..., Any], *args: Any, process: bool = False) -> Any:
        if not process:
            return await asyncio.to_thread(fn, *args)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), functools.partial(fn, *args))
        except BrokenProcessPool:
            self.close()  # a worker died (killed, out of memory): a fresh pool for the next call
            raise

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


Then = Callable[[Any], Awaitable[None]]
Work = Callable[[], Awaitable[Any]]
