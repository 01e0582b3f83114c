"""FX402: duplicate service, topic and table names (repeated YAML keys, or names equal up to case and -/_)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from framework.lint.context import TOPOLOGY, LintContext
from framework.lint.findings import Finding

SECTIONS = {"services": "service", "topics": "topic", "tables": "table"}


def _normal(name: str) -> str:
    return name.lower().replace("-", "_")


def _duplicate_keys(ctx: LintContext) -> Iterator[Finding]:
    for full, first, dup in ctx.source.duplicates:
        path = ctx.strip_prefix(full)
        where = f"line {first.line}" if first.file == dup.file else str(first)
        kind = SECTIONS.get(path[0]) if len(path) == 2 else None
        if kind:
            owner = path[1]
            message = (
                f"duplicate {kind} {owner!r} (first defined at {where}); YAML keeps only the last one, "
                "so rename or merge them"
            )
        else:
            owner = TOPOLOGY
            message = f"duplicate key {'.'.join(path)!r} (first defined at {where}); YAML keeps only the last one"
        yield Finding(level="error", code="FX402", service=owner, message=message, file=dup.file, line=dup.line)


def _collisions(ctx: LintContext, section: str, names: Mapping[str, Any]) -> Iterator[Finding]:
    seen: dict[str, str] = {}
    kind = SECTIONS[section]
    for name in names:
        key = _normal(name)
        if key not in seen:
            seen[key] = name
            continue
        message = (
            f"{kind} {name!r} collides with {seen[key]!r} (names differ only in case or -/_); "
            "rename one — they are the same name for metrics, groups and docs"
        )
        yield ctx.error("FX402", name, message, (section, name))


def duplicates(ctx: LintContext) -> Iterator[Finding]:
    """FX402: YAML duplicate keys from the source map, and names that normalise to the same one."""
    yield from _duplicate_keys(ctx)
    topo = ctx.topology
    for section, names in (("services", topo.services), ("topics", topo.topics), ("tables", topo.tables)):
        yield from _collisions(ctx, section, names)
