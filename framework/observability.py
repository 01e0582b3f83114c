"""``/metrics`` (Prometheus text) and ``/health`` (JSON) for a running ``fxrun``.

A minimal asyncio HTTP/1.1 server: one request per connection, GET or HEAD, nothing else.
Every scrape calls ``snapshot()`` (the runtime's ``metrics()``: one dict per service, as
:meth:`framework.metrics.ServiceMetrics.snapshot` returns, plus its ``tables``), so the numbers
are never older than the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("fxflow.observability")

Snapshot = Callable[[], list[dict[str, Any]]]
HEALTHY_STATES = frozenset({"running", "finished"})
STATES = ("created", "running", "restarting", "failed", "finished", "stopped")
HOST_ENV = "FXFLOW_METRICS_HOST"
_REQUEST_TIMEOUT_S = 30.0

_COUNTERS = (
    ("in", "fxflow_messages_received", "Messages delivered to the service's handlers."),
    ("out", "fxflow_messages_published", "Messages the service published."),
    ("errors", "fxflow_handler_errors", "Handler calls that raised."),
    ("dead_lettered", "fxflow_dead_lettered", "Messages the service dead-lettered."),
    ("restarts", "fxflow_restarts", "Times the service's node was restarted."),
)
_TABLE_COUNTERS = (
    ("written", "fxflow_table_rows_written", "Rows written to the table."),
    ("failures", "fxflow_table_write_failures", "Failed batch writes (retried)."),
    ("rejected", "fxflow_table_rows_rejected", "Rows the store rejected."),
    ("spilled", "fxflow_table_rows_spilled", "Rows spilled to disk at shutdown."),
)


class SnapshotCollector:
    """Turns the runtime's snapshot into metric families at scrape time."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        services = self.snapshot()
        for key, name, doc in _COUNTERS:
            family = CounterMetricFamily(name, doc, labels=["service"])
            for snap in services:
                family.add_metric([snap["service"]], float(snap.get(key, 0)))
            yield family
        yield self._latency(services)
        latency_max = GaugeMetricFamily(
            "fxflow_handler_latency_max_seconds", "Slowest handler call so far.", labels=["service"]
        )
        state = GaugeMetricFamily("fxflow_service_state", "1 for the service's current state.", labels=["service", "state"])
        up = GaugeMetricFamily("fxflow_service_up", "1 while the service is running or has finished.", labels=["service"])
        for snap in services:
            latency_max.add_metric([snap["service"]], _latency_ms(snap).get("max", 0.0) / 1000)
            current = snap.get("state", "created")
            for name in dict.fromkeys((*STATES, current)):
                state.add_metric([snap["service"], name], 1.0 if name == current else 0.0)
            up.add_metric([snap["service"]], 1.0 if current in HEALTHY_STATES else 0.0)
        yield from (latency_max, state, up)
        yield from self._tables(services)

    @staticmethod
    def _latency(services: list[dict[str, Any]]) -> Metric:
        """Count and sum of handler time; from ``count``/``total`` when the snapshot has them, else from ``in`` × mean."""
        family = SummaryMetricFamily("fxflow_handler_latency_seconds", "Handler call duration.", labels=["service"])
        for snap in services:
            latency = _latency_ms(snap)
            count = float(latency.get("count", snap.get("in", 0)))
            total_ms = float(latency.get("total", latency.get("mean", 0.0) * count))
            family.add_metric([snap["service"]], count_value=count, sum_value=total_ms / 1000)
        return family

    @staticmethod
    def _tables(services: list[dict[str, Any]]) -> Iterator[Metric]:
        pending = GaugeMetricFamily("fxflow_table_rows_pending", "Rows buffered, not yet written.", labels=["service", "table"])
        failing = GaugeMetricFamily("fxflow_table_failing", "1 while writes to the table fail.", labels=["service", "table"])
        counters = {key: CounterMetricFamily(name, doc, labels=["service", "table"]) for key, name, doc in _TABLE_COUNTERS}
        for snap in services:
            for stats in snap.get("tables") or []:
                labels = [snap["service"], str(stats.get("table"))]
                pending.add_metric(labels, float(stats.get("pending", 0)))
                failing.add_metric(labels, 1.0 if stats.get("failing") else 0.0)
                for key, family in counters.items():
                    family.add_metric(labels, float(stats.get(key, 0)))
        yield pending
        yield failing
        yield from counters.values()


def _latency_ms(snap: Mapping[str, Any]) -> Mapping[str, float]:
    value = snap.get("handler_latency_ms")
    return value if isinstance(value, Mapping) else {}


def health(services: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """200 when every service is running or finished, else 503; the body names each state."""
    states = {snap["service"]: snap.get("state", "created") for snap in services}
    healthy = bool(states) and all(state in HEALTHY_STATES for state in states.values())
    body: dict[str, Any] = {"status": "ok" if healthy else "unhealthy", "services": states}
    if not states:
        body["reason"] = "no services"
    return (200 if healthy else 503), body


class ObservabilityServer:
    """The running HTTP server; ``port`` is the bound port (useful with ``port=0``)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(snapshot))  # type: ignore[arg-type]
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._server is None:
            return
        self._closing = True
        self._server.close()
        await asyncio.sleep(0)
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            writer.close()
            return
        self._connections.add(task)
        try:
            status, content_type, body, head = await asyncio.wait_for(self._respond(reader), _REQUEST_TIMEOUT_S)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if not head:
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        request = await reader.readuntil(b"\r\n\r\n")
        method, _, rest = request.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n", head
        try:
            if path == "/metrics":
                return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry), head
            if path == "/health":
                status, payload = health(self.snapshot())
                return status, "application/json", json.dumps(payload, sort_keys=True).encode() + b"\n", head
        except Exception as exc:
            log.exception("observability: %s failed", path)
            payload = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            return (503 if path == "/health" else 500), "application/json", json.dumps(payload).encode() + b"\n", head
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics or /health\n", head


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable"}


async def start_observability(snapshot: Snapshot, host: str | None = None, port: int = 0) -> ObservabilityServer:
    """Serve ``/metrics`` and ``/health`` on ``host:port`` (``port=0``: a free port).

    ``host=None`` binds ``$FXFLOW_METRICS_HOST`` if set (containers set ``0.0.0.0`` so Prometheus
    can scrape them), else ``127.0.0.1``.
    """
    server = ObservabilityServer(snapshot)
    await server.start(host or os.environ.get(HOST_ENV) or "127.0.0.1", port)
    return server
