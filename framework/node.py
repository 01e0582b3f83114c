"""The base class of node plugins and the decorators that declare handlers and timers.

A node speaks only to its :class:`~framework.context.NodeContext` (publish, tables, clock,
log), never to a transport or a database client, so the same node runs live, in the demo
and in a backtest on a simulated clock. See ``nodes/template`` for a complete example.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from framework.durations import parse_seconds

if TYPE_CHECKING:
    from framework.context import NodeContext
    from framework.registry import NodeSpec

P = TypeVar("P", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

HANDLER_ATTR = "__fxflow_handles__"
BATCH_ATTR = "__fxflow_batch__"
TIMER_ATTR = "__fxflow_every__"


def handles(port: str, *, batch: bool = False) -> Callable[[F], F]:
    """Mark ``async def method(self, message[, origin])`` as the handler of input ``port``.

    With ``batch=True`` it takes a :class:`~framework.chunk.Chunk` of messages instead (one
    kernel for live chunks of a few and backtest chunks of thousands); the runtime gathers
    single messages into chunks and splits chunks for single-message handlers.
    """

    def mark(fn: F) -> F:
        setattr(fn, HANDLER_ATTR, port)
        setattr(fn, BATCH_ATTR, batch)
        return fn

    return mark


def every(interval: str | float) -> Callable[[F], F]:
    """Mark ``async def method(self)`` to run every ``interval`` on the node's clock.

    ``interval`` is a duration (``"5s"``, ``"1m"``, seconds as a number) or the name of a
    params field holding one, so the period can be configured per service.
    """
    if isinstance(interval, (int, float)) and interval <= 0:
        raise ValueError("a timer interval must be positive")

    def mark(fn: F) -> F:
        setattr(fn, TIMER_ATTR, interval)
        return fn

    return mark


def timer_seconds(interval: str | float, params: BaseModel) -> float:
    """Resolve an ``@every`` interval against the node's params."""
    if isinstance(interval, str) and hasattr(params, interval):
        interval = getattr(params, interval)
    seconds = parse_seconds(interval)
    if seconds <= 0:
        raise ValueError(f"timer interval {interval!r} must be positive")
    return seconds


class Node(Generic[P]):
    """Subclass this, declare a :class:`~framework.registry.NodeSpec` for it, register the spec.

    Lifecycle, driven by the runtime: ``on_start`` → handlers, timers and ``run`` (a source's
    main loop; the node is *finished* when it returns) → ``on_stop`` (flush what is buffered).
    An exception in a handler dead-letters that message; repeated failures or a crash in
    ``run`` restart the node with backoff, the other services go on.
    """

    spec: ClassVar[NodeSpec]
    state_version: ClassVar[int] = 1
    """Bump when :meth:`snapshot`'s shape changes: a snapshot of another version is not restored."""
    snapshot_every: ClassVar[str | None] = None
    """Also save a snapshot this often (a duration or a params field), not only at stop."""

    def __init__(self, ctx: NodeContext, params: P) -> None:
        self.ctx = ctx
        self.params = params

    def snapshot(self) -> Any:
        """State to keep across a restart, as JSON-able data (None: nothing). Saved at stop."""
        return None

    def restore(self, state: Any) -> None:
        """Take back what :meth:`snapshot` returned, before ``on_start``."""

    async def on_start(self) -> None:
        """Open resources, load state. Subscriptions are already live."""

    async def run(self) -> None:
        """A source's main loop. The default returns at once (a purely reactive node)."""

    async def on_stop(self) -> None:
        """Flush buffers and release resources; called on shutdown and before a restart."""

    # --- what the run shows of this node (progress, summary); all optional ----------------

    def headline(self, final: bool = False) -> Mapping[str, Any] | None:
        """A few named figures of this service for the run's progress and its end-of-run summary.

        ``{"trades": 12, "equity": "99,120.55 USD"}``: label → a number, a short string, or None
        (shown as n/a). ``final=False``: the progress, every few seconds of wall time while the
        node runs, so keep it cheap and free of side effects; ``final=True``: once, after
        ``on_stop``, for the summary. None: nothing to show (the default)."""
        return None

    def event_span(self) -> tuple[int, int] | None:
        """A source that knows the event time it covers: ``(start_ms, end_ms)``, so the progress of a
        run on simulated time has an end (None: unknown or unbounded, the default)."""
        return None

    @property
    def url(self) -> str | None:
        """Where a server (``role="server"``) serves, once started: shown prominently by ``fxrun``."""
        return None

    @classmethod
    def handlers(cls) -> dict[str, str]:
        """Input port → method name, from ``@handles``."""
        out: dict[str, str] = {}
        for name in dir(cls):
            port = getattr(getattr(cls, name, None), HANDLER_ATTR, None)
            if port is not None:
                if port in out:
                    raise TypeError(f"{cls.__name__}: two handlers for port {port!r}")
                out[port] = name
        return out

    @classmethod
    def timers(cls) -> dict[str, str | float]:
        """Method name → interval as declared by ``@every`` (see :func:`timer_seconds`)."""
        return {
            name: getattr(getattr(cls, name), TIMER_ATTR)
            for name in dir(cls)
            if getattr(getattr(cls, name, None), TIMER_ATTR, None) is not None
        }

    @classmethod
    def overrides_run(cls) -> bool:
        return cls.run is not Node.run
