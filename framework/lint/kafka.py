"""FX301: Kafka topics — declared, configured (retention, partitions) and named ``<purpose>_archive|_log``."""

from __future__ import annotations

import re
from collections.abc import Iterator

from framework.lint.context import TOPOLOGY, LintContext
from framework.lint.findings import Finding
from framework.topology.model import Topic

TOPIC_NAME = re.compile(r"^[a-z][a-z0-9_]*_(archive|log)$")
RETENTION_HINT = "the seed keeps orders and signals 7y, data archives 1y, logs 90d"


def _renamed(name: str) -> str:
    fixed = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "topic"
    if not fixed[0].isalpha():
        fixed = f"t_{fixed}"
    return fixed if TOPIC_NAME.match(fixed) else f"{fixed}_archive"


def _config(ctx: LintContext, name: str, topic: Topic) -> Iterator[Finding]:
    path = ("topics", name)
    if topic.retention is None:
        message = f"topic {name!r} has no retention; set `retention:` ({RETENTION_HINT})"
        yield ctx.error("FX301", name, message, path)
    if topic.partitions is None:
        message = f"topic {name!r} has no partitions; set `partitions:` (records are keyed by symbol, e.g. 14)"
        yield ctx.error("FX301", name, message, path)
    if not TOPIC_NAME.match(name):
        message = f"topic {name!r} does not follow <purpose>_archive or <purpose>_log; rename it, e.g. {_renamed(name)!r}"
        yield ctx.error("FX301", name, message, path)


def _no_cluster(ctx: LintContext) -> Iterator[Finding]:
    if ctx.topology.kafka is not None:
        return
    used = [ep for ep in ctx.wiring.endpoints if ep.kind == "kafka"]
    if not used:
        return
    names = ", ".join(sorted({ep.name for ep in used}))
    message = (
        f"Kafka topics are used ({names}) but there is no `kafka:` section; they only exist in-process. "
        "Add `kafka: {bootstrap: [host:9092]}` to run them on a broker"
    )
    first = min(used, key=lambda ep: ctx.locate(ctx.where(ep))[1] or 0)
    yield ctx.warning("FX301", TOPOLOGY, message, ctx.where(first))


def topics(ctx: LintContext) -> Iterator[Finding]:
    """FX301: every used topic is declared and configured; a Kafka section exists when topics are used."""
    yield from ctx.undeclared("kafka", "FX301", ctx.topology.topics, "Kafka topic", "declare it under `topics:` with partitions and retention")
    for name, topic in ctx.topology.topics.items():
        yield from _config(ctx, name, topic)
    yield from _no_cluster(ctx)
