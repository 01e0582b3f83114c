"""Start and stop order: a service starts after every service it consumes from (cycles as one unit)."""

from __future__ import annotations

from collections.abc import Sequence

from framework.subjects import intersects
from framework.wiring import Endpoint, Wiring


def dependency_order(wiring: Wiring, services: Sequence[str]) -> list[str]:
    """Publishers before their consumers.

    Services on a cycle (execution ⇄ broker) form one strongly connected component; the
    components are ordered topologically and a component keeps declaration order inside,
    so a service downstream of a cycle still comes after every member of it.
    """
    outs: dict[str, list[Endpoint]] = {s: [] for s in services}
    ins: dict[str, list[Endpoint]] = {s: [] for s in services}
    for e in wiring.endpoints:
        if e.service in outs:
            (outs if e.direction == "out" else ins)[e.service].append(e)
    edges: dict[str, list[str]] = {s: [] for s in services}
    for a in services:
        for b in services:
            if a != b and any(_reaches(o, i) for o in outs[a] for i in ins[b]):
                edges[a].append(b)
    return order_graph(list(services), edges)


def order_graph(nodes: list[str], edges: dict[str, list[str]]) -> list[str]:
    """Topological order of ``nodes`` with cycles collapsed (Tarjan), stable by position."""
    position = {n: i for i, n in enumerate(nodes)}
    component: dict[str, int] = {}
    components: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(root: str) -> None:
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = len(components)
                    members.append(member)
                    if member == node:
                        break
                components.append(sorted(members, key=position.__getitem__))

    for n in nodes:
        if n not in index:
            visit(n)
    successors: dict[int, set[int]] = {c: set() for c in range(len(components))}
    indegree = dict.fromkeys(range(len(components)), 0)
    for a in nodes:
        for b in edges[a]:
            ca, cb = component[a], component[b]
            if ca != cb and cb not in successors[ca]:
                successors[ca].add(cb)
                indegree[cb] += 1
    first = {c: position[members[0]] for c, members in enumerate(components)}
    ready = sorted((c for c, d in indegree.items() if d == 0), key=first.__getitem__)
    order: list[str] = []
    while ready:
        c = ready.pop(0)
        order.extend(components[c])
        for succ in successors[c]:
            indegree[succ] -= 1
            if indegree[succ] == 0:
                ready.append(succ)
        ready.sort(key=first.__getitem__)
    return order


def _reaches(out: Endpoint, inp: Endpoint) -> bool:
    if out.kind != inp.kind:
        return False
    if out.kind == "kafka":
        return out.name == inp.name
    return any(intersects(p, s) for p in inp.subjects for s in out.subjects)
