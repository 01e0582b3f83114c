"""FX501: every path from a raw signal to order execution passes a risk gate (through messages or tables)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from framework.lint.context import Link, LintContext
from framework.lint.findings import Finding
from framework.wiring import Endpoint

SIGNAL = "signal"
APPROVED = "approved_signal"
ORDER = "order_event"
RISK_GATE = "risk_gate"
EXECUTION = "execution"

Graph = dict[str, dict[str, Link]]


def _outputs(ctx: LintContext, service: str) -> list[Endpoint]:
    return [e for e in ctx.endpoints_of(service) if e.direction == "out" and e.kind != "table"]


def _inputs(ctx: LintContext, service: str) -> list[Endpoint]:
    return [e for e in ctx.endpoints_of(service) if e.direction == "in" and e.kind != "table"]


def _publishes(ctx: LintContext, service: str, contract: str) -> bool:
    return any(ctx.carries(e, contract) for e in _outputs(ctx, service))


def is_gate(ctx: LintContext, service: str) -> bool:
    """A ``risk_gate`` node; without a spec, a service that turns ``signal`` into ``approved_signal``."""
    spec = ctx.spec(service)
    if spec is not None:
        return spec.role == RISK_GATE
    consumes = any(ctx.carries(e, SIGNAL) for e in _inputs(ctx, service))
    return consumes and _publishes(ctx, service, APPROVED)


def is_target(ctx: LintContext, service: str) -> bool:
    """An ``execution`` node; without a spec, a service that publishes ``order_event``."""
    spec = ctx.spec(service)
    if spec is not None:
        return spec.role == EXECUTION
    return _publishes(ctx, service, ORDER)


def table_links(ctx: LintContext) -> list[Link]:
    """Writer → reader of the same table: a service that writes a table reaches every service reading it."""
    readers: dict[str, list[Endpoint]] = {}
    for ep in ctx.wiring.select(direction="in", kind="table"):
        readers.setdefault(ep.name, []).append(ep)
    return [Link(w, r) for w in ctx.wiring.select(direction="out", kind="table") for r in readers.get(w.name, [])]


def service_graph(ctx: LintContext) -> Graph:
    """Edge A→B (with one example link) when an output of A reaches an input of B.

    Messages and tables both carry data: a signal written to a table and read back by an
    execution node bypasses the gate as surely as a subscription does. A messaging link is
    preferred as the example when both exist.
    """
    graph: Graph = {name: {} for name in sorted(ctx.topology.services)}
    for link in (*ctx.links, *table_links(ctx)):
        a, b = link.publisher.service, link.subscriber.service
        if a != b:
            graph[a].setdefault(b, link)
    return graph


def _paths(graph: Graph, source: str, gates: set[str], targets: set[str]) -> Iterator[list[str]]:
    """Shortest gate-free path from ``source`` to each reachable target, in a stable order."""
    parent: dict[str, str | None] = {source: None}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        if node in targets:
            path = [node]
            while (prev := parent[path[-1]]) is not None:
                path.append(prev)
            yield path[::-1]
        for nxt in sorted(graph[node]):
            if nxt not in parent and nxt not in gates:
                parent[nxt] = node
                queue.append(nxt)


def _longest(paths: list[list[str]]) -> list[list[str]]:
    """Drop paths that are the tail of another (``relay → exec`` inside ``inference → relay → exec``)."""
    tails = {tuple(p[i:]) for p in paths for i in range(1, len(p))}
    return [p for p in paths if tuple(p) not in tails]


def _hop(link: Link) -> str:
    pub, sub = link.publisher, link.subscriber
    if sub.kind == "table":
        reads = "reads" if sub.binding is None else f"input {sub.port!r} reads"
        return f"{sub.service} {reads} table {sub.name!r}, which {pub.service}'s output {pub.port!r} writes"
    if sub.kind == "kafka":
        return f"{sub.service} input {sub.port!r} consumes topic {sub.name!r} that {pub.service} produces"
    return f"{sub.service} input {sub.port!r} subscribes {sub.name!r}, matching {pub.service}'s {pub.name!r}"


def _bypass(ctx: LintContext, graph: Graph, path: list[str]) -> Finding:
    route = " → ".join(path)
    fix = "route them through a risk_gate node and consume only its approved_signal output"
    if len(path) == 1:
        signal_out = next(e for e in _outputs(ctx, path[0]) if ctx.carries(e, SIGNAL))
        message = f"{path[0]} publishes raw signals and executes orders itself, with no risk gate between; {fix}"
        return ctx.error("FX501", path[0], message, ctx.where(signal_out))
    last = graph[path[-2]][path[-1]]
    message = f"signals reach execution without a risk gate: {route} ({_hop(last)}); {fix}"
    return ctx.error("FX501", path[-1], message, ctx.where(last.subscriber))


def _ungated_approvals(ctx: LintContext) -> Iterator[Finding]:
    for name in sorted(ctx.topology.services):
        spec = ctx.spec(name)
        if spec is None or spec.role == RISK_GATE:
            continue
        for ep in _outputs(ctx, name):
            if ctx.carries(ep, APPROVED):
                message = (
                    f"output {ep.port!r} publishes {APPROVED} but node {spec.name!r} has role {spec.role!r}; "
                    "only a risk_gate node may approve signals — publish another contract or use a risk_gate node"
                )
                yield ctx.error("FX501", name, message, ctx.where(ep))


def risk_gate(ctx: LintContext) -> Iterator[Finding]:
    """FX501: no gate-free path from a ``signal`` publisher to an execution node; only gates approve."""
    names = sorted(ctx.topology.services)
    gates = {n for n in names if is_gate(ctx, n)}
    targets = {n for n in names if is_target(ctx, n)}
    sources = [n for n in names if n not in gates and _publishes(ctx, n, SIGNAL)]
    if targets and sources:
        graph = service_graph(ctx)
        paths = [path for source in sources for path in _paths(graph, source, gates, targets)]
        for path in _longest(paths):
            yield _bypass(ctx, graph, path)
    yield from _ungated_approvals(ctx)
