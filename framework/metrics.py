"""Per-service counters, cheap enough for the hot path and readable while the run goes on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ServiceMetrics:
    service: str
    received: int = 0
    published: int = 0
    errors: int = 0
    dead_lettered: int = 0
    restarts: int = 0
    latency_count: int = 0
    latency_total_s: float = 0.0
    latency_max_s: float = 0.0
    state: str = "created"
    last_error: str | None = None
    per_port: dict[str, int] = field(default_factory=dict)

    def observe_latency(self, seconds: float) -> None:
        self.latency_count += 1
        self.latency_total_s += seconds
        if seconds > self.latency_max_s:
            self.latency_max_s = seconds

    def snapshot(self) -> dict[str, Any]:
        mean = self.latency_total_s / self.latency_count if self.latency_count else 0.0
        return {
            "service": self.service,
            "state": self.state,
            "in": self.received,
            "out": self.published,
            "errors": self.errors,
            "dead_lettered": self.dead_lettered,
            "restarts": self.restarts,
            "handler_latency_ms": {
                "mean": round(mean * 1000, 4),
                "max": round(self.latency_max_s * 1000, 4),
                "count": self.latency_count,
                "total": round(self.latency_total_s * 1000, 4),
            },
            "ports": dict(self.per_port),
            "last_error": self.last_error,
        }


def format_table(snapshots: list[dict[str, Any]]) -> str:
    """A fixed-width table of snapshots for the console."""
    header = f"{'service':32} {'state':9} {'in':>9} {'out':>9} {'err':>5} {'dlq':>5} {'rst':>4} {'lat ms':>8}"
    lines = [header, "-" * len(header)]
    for snap in snapshots:
        lines.append(
            f"{snap['service'][:32]:32} {snap['state'][:9]:9} {snap['in']:>9} {snap['out']:>9} {snap['errors']:>5} "
            f"{snap['dead_lettered']:>5} {snap['restarts']:>4} {snap['handler_latency_ms']['mean']:>8.3f}"
        )
    return "\n".join(lines)
