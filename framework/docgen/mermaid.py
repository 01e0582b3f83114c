"""The Mermaid ``flowchart LR`` of the whole topology: services per phase, wired through subjects, topics and tables."""

from __future__ import annotations

import re

from framework.docgen.flow import Flow
from framework.topology.model import PHASE_TITLES, PHASES

CLASS_DEFS = (
    "classDef service fill:#eef3ff,stroke:#4a6fd8",
    "classDef disabled fill:#f5f5f5,stroke:#999,stroke-dasharray:5 5,color:#777",
    "classDef subject fill:#e9f7ef,stroke:#2e8b57",
    "classDef pattern fill:#ffffff,stroke:#2e8b57,stroke-dasharray:3 3",
    "classDef topic fill:#fff4e0,stroke:#d48a00",
    "classDef table fill:#f3ecfa,stroke:#7b4fa8",
)


class MermaidIds:
    """Stable, unique Mermaid node ids: ``[A-Za-z0-9_]`` only, prefixed by kind, suffixed on collision."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], str] = {}
        self._taken: set[str] = set()

    def get(self, kind: str, name: str) -> str:
        key = (kind, name)
        if key not in self._ids:
            base = f"{kind}_{slug(name)}"
            candidate, n = base, 2
            while candidate in self._taken:
                candidate, n = f"{base}_{n}", n + 1
            self._taken.add(candidate)
            self._ids[key] = candidate
        return self._ids[key]


def slug(text: str) -> str:
    text = text.replace(">", "all").replace("*", "any")
    text = re.sub(r"[{}]", "", text)
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "x"


def label(text: str) -> str:
    """A quoted Mermaid label; quotes and angle brackets become entity codes."""
    escaped = text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    return f'"{escaped}"'


def _service_lines(flow: Flow, ids: MermaidIds) -> list[str]:
    lines: list[str] = []
    for phase in PHASES:
        members = [s for s in flow.services if flow.topology.services[s].phase == phase]
        lines.append(f"  subgraph phase_{phase}[{label(PHASE_TITLES[phase])}]")
        lines.append("    direction TB")
        for name in members:
            service = flow.topology.services[name]
            text = name if service.node in flow.registry else f"{name} (not built)"
            css = "service" if service.enabled else "disabled"
            lines.append(f"    {ids.get('svc', name)}[{label(text)}]:::{css}")
        lines.append("  end")
    return lines


def _wire_lines(flow: Flow, ids: MermaidIds) -> tuple[list[str], list[str]]:
    nodes: list[str] = []
    for node in flow.subjects.values():
        css = "pattern" if not node.published else "subject"
        nodes.append(f"  {ids.get('nats', node.template)}([{label(node.template)}]):::{css}")
    for topic in flow.topics.values():
        nodes.append(f"  {ids.get('kafka', topic.name)}[({label(topic.name)})]:::topic")
    for table in flow.tables.values():
        nodes.append(f"  {ids.get('table', table.name)}[/{label(table.name)}/]:::table")
    return nodes, _edges(flow, ids)


def _edges(flow: Flow, ids: MermaidIds) -> list[str]:
    edges: list[str] = []
    for service in flow.services:
        sid = ids.get("svc", service)
        for e in flow.endpoints(service):
            wire = ids.get(e.kind, e.name)
            edges.append(f"  {sid} --> {wire}" if e.direction == "out" else f"  {wire} --> {sid}")
    for node in flow.subjects.values():
        if not node.published:
            target = ids.get("nats", node.template)
            edges.extend(f"  {ids.get('nats', source)} -.-> {target}" for source in node.sources)
    return list(dict.fromkeys(edges))


def render_mermaid(flow: Flow) -> str:
    """The fenced ``mermaid`` block (without a trailing newline)."""
    ids = MermaidIds()
    nodes, edges = _wire_lines(flow, ids)
    body = ["flowchart LR", *_service_lines(flow, ids), *nodes, *edges, *(f"  {c}" for c in CLASS_DEFS)]
    return "```mermaid\n" + "\n".join(body) + "\n```"
