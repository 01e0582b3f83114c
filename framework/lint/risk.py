"""FX501: every path from a raw signal to order execution passes a risk gate (through messages or tables).

Fail closed: a risk gate is an installed plugin whose ``NodeSpec.role`` is ``risk_gate``, and
only one service publishes approved signals. The single exception is the topology's plan: a
*disabled* service whose plugin is not built yet is taken as the gate it is meant to be when it
consumes raw signals and is the only service publishing on the approved subjects. It cannot run
as it is, and the moment it can (its plugin installed, or the service enabled, which FX101
refuses without a plugin) the plugin's declared role decides.
"""

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


def approvers(ctx: LintContext) -> dict[str, list[Endpoint]]:
    """Services publishing approved signals, with the outputs that do.

    An output counts when it carries ``approved_signal`` or writes where such an output does
    (an intersecting subject, the same topic or table), whatever contract it declares.
    """
    outputs = list(ctx.wiring.select(direction="out"))
    carrying = {id(e) for e in outputs if ctx.carries(e, APPROVED)}
    subjects = {id(w.endpoint): w.patterns for w in ctx.wires}
    patterns = [p for key in carrying for p in subjects.get(key, ())]
    names = {(e.kind, e.name) for e in outputs if id(e) in carrying and e.kind != "nats"}
    out: dict[str, list[Endpoint]] = {}
    for ep in outputs:
        if id(ep) in carrying:
            hit = True
        elif ep.kind == "nats":
            hit = any(ctx.intersects(a, b) for a in subjects.get(id(ep), ()) for b in patterns)
        else:
            hit = (ep.kind, ep.name) in names
        if hit:
            out.setdefault(ep.service, []).append(ep)
    return out


def _planned_gate(ctx: LintContext, service: str, approving: dict[str, list[Endpoint]]) -> bool:
    """A disabled service whose plugin is not built, the only approver, consuming raw signals (see the module doc)."""
    declared = ctx.topology.services[service]
    if ctx.spec(service) is not None or declared.enabled or declared.node in ctx.registry.load_errors:
        return False
    consumes = any(ctx.carries(e, SIGNAL) for e in _inputs(ctx, service))
    return consumes and list(approving) == [service]


def gates(ctx: LintContext, approving: dict[str, list[Endpoint]]) -> set[str]:
    """Installed ``risk_gate`` plugins, plus the planned gate of a disabled service whose plugin is not built."""
    out = set()
    for name in ctx.topology.services:
        spec = ctx.spec(name)
        if (spec is not None and spec.role == RISK_GATE) or _planned_gate(ctx, name, approving):
            out.add(name)
    return out


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


def _not_a_gate(ctx: LintContext, service: str) -> str:
    spec = ctx.spec(service)
    declared = ctx.topology.services[service]
    if spec is not None:
        return f"node {spec.name!r} has role {spec.role!r}"
    failure = ctx.registry.load_errors.get(declared.node)
    if failure:
        return f"node {declared.node!r} failed to load, so nothing shows it is a risk gate"
    if declared.enabled:
        return f"node {declared.node!r} is not installed, so nothing shows it is a risk gate"
    return f"node {declared.node!r} is not built and the service does not consume raw signals"


def _approval_findings(ctx: LintContext, approving: dict[str, list[Endpoint]], gated: set[str]) -> Iterator[Finding]:
    """Only one service publishes on the approved subjects, and it is a risk gate."""
    installed = [n for n in approving if (spec := ctx.spec(n)) is not None and spec.role == RISK_GATE]
    keep = installed[0] if len(installed) == 1 else None
    for name in sorted(approving):
        others = sorted(n for n in approving if n != name)
        for ep in approving[name]:
            if others and name != keep:
                shown = "; ".join(f"{n} on {', '.join(sorted({e.name for e in approving[n]}))}" for n in others)
                message = (
                    f"output {ep.port!r} publishes approved signals on {ep.name!r}, and so do {shown}; only one "
                    "service, the risk gate, may publish on the approved subjects (one gate sees every position) — "
                    "keep one publisher, the gate, and route the others through it"
                )
            elif name not in gated:
                message = (
                    f"output {ep.port!r} publishes {APPROVED} on {ep.name!r} but {_not_a_gate(ctx, name)}; only an "
                    "installed risk_gate plugin may approve signals — publish another contract or use a risk_gate node"
                )
            else:
                continue
            yield ctx.error("FX501", name, message, ctx.where(ep))


def risk_gate(ctx: LintContext) -> Iterator[Finding]:
    """FX501: no gate-free path from a ``signal`` publisher to an execution node; only one gate approves."""
    names = sorted(ctx.topology.services)
    approving = approvers(ctx)
    gated = gates(ctx, approving)
    targets = {n for n in names if is_target(ctx, n)}
    sources = [n for n in names if n not in gated and _publishes(ctx, n, SIGNAL)]
    if targets and sources:
        graph = service_graph(ctx)
        paths = [path for source in sources for path in _paths(graph, source, gated, targets)]
        for path in _longest(paths):
            yield _bypass(ctx, graph, path)
    yield from _approval_findings(ctx, approving, gated)
