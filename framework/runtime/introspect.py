"""``ctx.system``: what a node may see of the run it belongs to (a dashboard's system map).

The topology's services and the links between them (who feeds whom, through which subject,
topic or table), and the live counters of the services this process runs: the same
snapshots ``fxrun status`` prints from ``metrics.json``. Everything returned is a copy;
nothing here changes the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.subjects import intersects
from framework.wiring import Endpoint

if TYPE_CHECKING:
    from framework.runtime.core import Runtime


class SystemView:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._graph: dict[str, Any] | None = None

    def graph(self) -> dict[str, Any]:
        """``{"services": [...], "links": [...]}`` of the enabled services.

        A service: ``name``, ``node``, ``phase``, ``description``, ``replicas`` and ``here``
        (it runs in this process, so :meth:`metrics` has its counters). A link: ``source``,
        ``target``, the target's input ``port``, ``kind`` (nats, kafka, table) and ``via`` (the
        subject template, topic or table)."""
        if self._graph is None:
            self._graph = _graph(self._rt)
        return {"services": [dict(s) for s in self._graph["services"]], "links": [dict(lk) for lk in self._graph["links"]]}

    def metrics(self) -> list[dict[str, Any]]:
        """Per-service counters of this process (``in``, ``out``, ``errors``, ``dead_lettered``,
        ``restarts``, ``state``, ``last_error``, handler latency, buffers), in start order."""
        return self._rt.metrics()

    @property
    def dead_letters(self) -> int:
        """Dead letters of this process so far (every service's, and undecodable messages)."""
        return self._rt.dead_letters.count if self._rt.dead_letters is not None else 0


def _graph(rt: Runtime) -> dict[str, Any]:
    topology = rt.topology
    enabled = [name for name, s in topology.services.items() if s.enabled or name in rt.services]
    services = [
        {
            "name": name,
            "node": topology.services[name].node,
            "phase": topology.services[name].phase,
            "description": topology.services[name].description or "",
            "replicas": topology.services[name].replicas,
            "here": name in rt.services,
        }
        for name in enabled
    ]
    chosen = set(enabled)
    outs: dict[str, list[Endpoint]] = {}
    ins: dict[str, list[Endpoint]] = {}
    for e in rt.wiring.endpoints:
        if e.service in chosen:
            (outs if e.direction == "out" else ins).setdefault(e.service, []).append(e)
    links: dict[tuple[str, str, str, str, str], None] = {}
    for source in enabled:
        for target in enabled:
            if source == target:
                continue
            for o in outs.get(source, ()):
                for i in ins.get(target, ()):
                    if _links(o, i):
                        links[(source, target, i.port, i.kind, o.name if i.kind == "nats" else i.name)] = None
    return {
        "services": services,
        "links": [{"source": s, "target": t, "port": p, "kind": k, "via": v} for s, t, p, k, v in links],
    }


def _links(out: Endpoint, inp: Endpoint) -> bool:
    if out.kind != inp.kind:
        return False
    if out.kind == "nats":
        return any(intersects(p, s) for p in inp.subjects for s in out.subjects)
    return out.name == inp.name
