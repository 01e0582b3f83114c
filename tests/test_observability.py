"""``/metrics`` and ``/health`` over real HTTP, fed from live ``ServiceMetrics``."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from framework.metrics import ServiceMetrics
from framework.observability import ObservabilityServer, start_observability

TIMEOUT = 30


def _fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return await asyncio.wait_for(asyncio.to_thread(_fetch, url, method), TIMEOUT * 2)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def services() -> dict[str, ServiceMetrics]:
    feed = ServiceMetrics("feed", received=0, published=120, state="running")
    watch = ServiceMetrics("spread-watch", received=100, published=7, errors=2, dead_lettered=1, restarts=1)
    watch.state = "running"
    for seconds in (0.001, 0.003):
        watch.observe_latency(seconds)
    return {"feed": feed, "spread-watch": watch}


@pytest.fixture
async def server(services: dict[str, ServiceMetrics]) -> AsyncIterator[ObservabilityServer]:
    def snapshot() -> list[dict[str, Any]]:
        snaps = [m.snapshot() for m in services.values()]
        snaps[1]["tables"] = [{"table": "tick_stats", "pending": 4, "written": 90, "failures": 1, "failing": False,
                               "rejected": 0, "spilled": 0}]  # fmt: skip
        return snaps

    srv = await start_observability(snapshot, port=0)
    yield srv
    await srv.close()


async def test_metrics_are_prometheus_text_labelled_by_service(
    server: ObservabilityServer, services: dict[str, ServiceMetrics]
) -> None:
    assert server.port > 0
    status, headers, body = await fetch(f"{server.url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = _samples(body.decode())
    watch = (("service", "spread-watch"),)
    assert samples[("fxflow_messages_received_total", watch)] == 100
    assert samples[("fxflow_messages_published_total", watch)] == 7
    assert samples[("fxflow_handler_errors_total", watch)] == 2
    assert samples[("fxflow_dead_lettered_total", watch)] == 1
    assert samples[("fxflow_restarts_total", watch)] == 1
    assert samples[("fxflow_messages_published_total", (("service", "feed"),))] == 120
    assert samples[("fxflow_handler_latency_seconds_count", watch)] == 2  # two handler calls were timed
    assert samples[("fxflow_handler_latency_seconds_sum", watch)] == pytest.approx(0.004)
    assert samples[("fxflow_handler_latency_max_seconds", watch)] == pytest.approx(0.003)
    assert samples[("fxflow_service_state", (("service", "spread-watch"), ("state", "running")))] == 1
    assert samples[("fxflow_service_state", (("service", "spread-watch"), ("state", "failed")))] == 0
    assert samples[("fxflow_service_up", watch)] == 1
    table = (("service", "spread-watch"), ("table", "tick_stats"))
    assert samples[("fxflow_table_rows_pending", table)] == 4
    assert samples[("fxflow_table_rows_written_total", table)] == 90

    services["spread-watch"].received += 5
    services["spread-watch"].state = "restarting"
    samples = _samples((await fetch(f"{server.url}/metrics"))[2].decode())
    assert samples[("fxflow_messages_received_total", watch)] == 105
    assert samples[("fxflow_service_state", (("service", "spread-watch"), ("state", "restarting")))] == 1
    assert samples[("fxflow_service_up", watch)] == 0


async def test_health_follows_the_service_states(server: ObservabilityServer, services: dict[str, ServiceMetrics]) -> None:
    status, headers, body = await fetch(f"{server.url}/health")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "services": {"feed": "running", "spread-watch": "running"}}

    services["feed"].state = "finished"
    assert (await fetch(f"{server.url}/health"))[0] == 200

    services["spread-watch"].state = "failed"
    status, _, body = await fetch(f"{server.url}/health")
    assert status == 503
    assert json.loads(body)["services"]["spread-watch"] == "failed"


async def test_other_paths_and_methods(server: ObservabilityServer) -> None:
    assert (await fetch(f"{server.url}/nope"))[0] == 404
    assert (await fetch(f"{server.url}/metrics", method="POST"))[0] == 405
    status, headers, body = await fetch(f"{server.url}/health", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


async def test_a_failing_snapshot_is_an_error_response_not_a_dead_server() -> None:
    calls = 0

    def snapshot() -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return [ServiceMetrics("a", state="running").snapshot()]

    srv = await start_observability(snapshot)
    try:
        status, _, body = await fetch(f"{srv.url}/health")
        assert status == 503 and "boom" in json.loads(body)["error"]
        assert (await fetch(f"{srv.url}/health"))[0] == 200
    finally:
        await srv.close()


async def test_no_services_is_unhealthy() -> None:
    srv = await start_observability(list)
    try:
        status, _, body = await fetch(f"{srv.url}/health")
        assert status == 503 and json.loads(body)["reason"] == "no services"
        assert (await fetch(f"{srv.url}/metrics"))[0] == 200
    finally:
        await srv.close()


async def test_close_frees_the_port_and_drops_idle_connections() -> None:
    srv = await start_observability(list, host="127.0.0.1")
    port = srv.port
    _, idle = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0)
    await asyncio.wait_for(srv.close(), TIMEOUT)
    idle.close()
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    await srv.close()
