"""The generic runtime: small topologies of test nodes run on the real transports, stores and contracts."""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from framework.contracts import ContractRegistry
from framework.errors import UserError
from framework.node import Node, every, handles
from framework.registry import NodeSpec, Port, Registry
from framework.runtime import Runtime, order_graph
from framework.stores.clickhouse import ClickHouseStore
from framework.topology.load import load_topology_file
from framework.topology.model import Topology
from framework.transport.inprocess import InProcessPubSub

PROJECT = Path(__file__).resolve().parents[1]
CONTRACTS = ContractRegistry.load(PROJECT / "contracts")
T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z
TIMEOUT = 20.0

EVENTS: list[tuple[str, str]] = []
"""(event, service) in the order they happened: start, stop."""
SEEN: dict[str, list[Any]] = defaultdict(list)
"""What each service observed (seq numbers, timer firings, …)."""
_instances = itertools.count(1)


@pytest.fixture(autouse=True)
def _reset() -> None:
    EVENTS.clear()
    SEEN.clear()


def tick(seq: int, ts: int = T0, symbol: str = "EURUSD", bid: float = 1.1, source: str = "test") -> dict[str, Any]:
    return {"symbol": symbol, "ts": ts, "bid": bid, "ask": round(bid + 0.0002, 5), "source": source, "seq": seq}


# --------------------------------------------------------------------------- test nodes


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceParams(Strict):
    first: int = 1
    count: int = 5
    step_ms: int = 1_000
    bad: list[int] = []
    """seq numbers published with an invalid bid (negative price)."""


class Source(Node[SourceParams]):
    """Publishes ``count`` ticks in event time, one every ``step_ms``, then finishes."""

    async def on_start(self) -> None:
        EVENTS.append(("start", self.ctx.service))

    async def run(self) -> None:
        p = self.params
        for seq in range(p.first, p.first + p.count):
            ts = T0 + (seq - 1) * p.step_ms
            await self.ctx.clock.wait_until(ts)
            ok = await self.ctx.publish("ticks", tick(seq, ts, bid=-1.0 if seq in p.bad else 1.1))
            SEEN[f"{self.ctx.service}:published"].append((seq, ok))

    async def on_stop(self) -> None:
        EVENTS.append(("stop", self.ctx.service))


class Relay(Node[Strict]):
    """Republishes every tick on its ``out`` port, marked as relayed."""

    async def on_start(self) -> None:
        EVENTS.append(("start", self.ctx.service))

    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        await self.ctx.publish("out", {**message, "source": "relay"})

    async def on_stop(self) -> None:
        EVENTS.append(("stop", self.ctx.service))


class SinkParams(Strict):
    fail_on: list[int] = []
    io_delay_s: float = 0.0


class Sink(Node[SinkParams]):
    """Records each tick's seq (and the instance that got it); raises on ``fail_on`` seqs."""

    async def on_start(self) -> None:
        self.instance = next(_instances)
        EVENTS.append(("start", self.ctx.service))

    @handles("ticks")
    async def on_tick(self, message: dict, origin: str) -> None:
        if self.params.io_delay_s:
            await asyncio.sleep(self.params.io_delay_s)
        if message["seq"] in self.params.fail_on:
            raise ValueError(f"cannot take seq {message['seq']}")
        SEEN[self.ctx.service].append(message["seq"])
        SEEN[f"{self.ctx.service}:detail"].append((self.instance, message["source"], message["symbol"], origin))

    async def on_stop(self) -> None:
        EVENTS.append(("stop", self.ctx.service))


class StartPublisher(Node[Strict]):
    """A reactive producer that publishes one tick while starting (no ``run``)."""

    async def on_start(self) -> None:
        EVENTS.append(("start", self.ctx.service))
        await self.ctx.publish("ticks", tick(1))

    async def on_stop(self) -> None:
        EVENTS.append(("stop", self.ctx.service))


class CrasherParams(Strict):
    pass


class Crasher(Node[CrasherParams]):
    """A source whose main loop crashes at once, every time."""

    async def run(self) -> None:
        SEEN[f"{self.ctx.service}:attempts"].append(time.monotonic())
        raise RuntimeError("feed disconnected")


class Ticker(Node[Strict]):
    """A never-ending source on the wall clock: one tick every 5 ms."""

    async def run(self) -> None:
        for seq in itertools.count(1):
            await self.ctx.publish("ticks", tick(seq, self.ctx.clock.now_ms()))
            await self.ctx.clock.sleep(0.005)


class ClockSleeper(Node[Strict]):
    """A source that only ever waits for event time (a poller on the simulated clock)."""

    async def run(self) -> None:
        while True:
            await self.ctx.clock.sleep(3600)
            SEEN[self.ctx.service].append(self.ctx.clock.now_ms())


class BadStartParams(Strict):
    user_error: bool = False


class BadStart(Node[BadStartParams]):
    """A node whose ``on_start`` always fails: a bug (RuntimeError) or a user mistake (UserError)."""

    async def on_start(self) -> None:
        SEEN[f"{self.ctx.service}:starts"].append(1)
        if self.params.user_error:
            raise UserError("params.key_env: environment variable KEY is not set")
        raise RuntimeError("cannot reach the model registry")

    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        SEEN[self.ctx.service].append(message["seq"])


class TimerParams(Strict):
    period: str = "1m"


class Periodic(Node[TimerParams]):
    """Counts ticks and, every ``period`` of event time, records (now, ticks so far)."""

    async def on_start(self) -> None:
        self.ticks = 0

    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        self.ticks += 1

    @every("period")
    async def report(self) -> None:
        SEEN[self.ctx.service].append((self.ctx.clock.now_ms(), self.ticks))


def _spec(name: str, cls: type[Node], params: type[BaseModel], inputs=(), outputs=(), role="transform") -> NodeSpec:
    return NodeSpec(
        name=name,
        factory=f"{__name__}:{cls.__name__}",
        params=params,
        inputs={p: Port("tick.v1") for p in inputs},
        outputs={p: Port("tick.v1") for p in outputs},
        role=role,
    )


REGISTRY = Registry()
for _s in (
    _spec("source", Source, SourceParams, outputs=["ticks"], role="source"),
    _spec("relay", Relay, Strict, inputs=["ticks"], outputs=["out"]),
    _spec("sink", Sink, SinkParams, inputs=["ticks"], role="sink"),
    _spec("start_publisher", StartPublisher, Strict, outputs=["ticks"], role="source"),
    _spec("crasher", Crasher, CrasherParams, outputs=["ticks"], role="source"),
    _spec("ticker", Ticker, Strict, outputs=["ticks"], role="source"),
    _spec("periodic", Periodic, TimerParams, inputs=["ticks"]),
    _spec("clock_sleeper", ClockSleeper, Strict, role="source"),
    _spec("bad_start", BadStart, BadStartParams, inputs=["ticks"]),
):
    REGISTRY.register(_s)


# --------------------------------------------------------------------------- helpers

BASE: dict[str, Any] = {
    "name": "test",
    "instruments": {
        "EURUSD": {"pip": 0.0001, "digits": 5},
        "GBPUSD": {"pip": 0.0001, "digits": 5},
        "XAUUSD": {"kind": "metal", "pip": 0.01, "digits": 2},
    },
    "timeframes": ["1m"],
    "domains": ["ticks", "relayed", "deadletter"],
    "runtime": {"clock": "simulated", "validation": "strict", "metrics_interval": "1h"},
}


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def topology(tmp_path: Path, services: dict[str, Any], **extra: Any) -> Topology:
    """Write a topology document to tmp_path and load it the way ``fxrun lint FILE`` does."""
    doc = copy.deepcopy(BASE)
    doc["services"] = services
    _merge(doc, extra)
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    topo, _ = load_topology_file(path)
    return topo


def runtime(topo: Topology, data_dir: Path, **kwargs: Any) -> Runtime:
    return Runtime(topo, REGISTRY, CONTRACTS, data_dir=data_dir, **kwargs)


async def run(rt: Runtime, duration: float = 10.0) -> None:
    await asyncio.wait_for(rt.run(duration), TIMEOUT)


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def metrics(rt: Runtime) -> dict[str, dict[str, Any]]:
    return {m["service"]: m for m in rt.metrics()}


def dead_letters(data_dir: Path, service: str) -> list[dict[str, Any]]:
    path = data_dir / "deadletter" / f"{service}.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def svc(node: str, phase: str = "data", **kwargs: Any) -> dict[str, Any]:
    return {"node": node, "phase": phase, **kwargs}


PIPELINE = {
    "source": svc("source", params={"count": 50}, outputs={"ticks": {"nats": "ticks.{symbol}"}}),
    "relay": svc(
        "relay", inputs={"ticks": {"nats": "ticks.{symbol}"}}, outputs={"out": {"nats": "relayed.{symbol}"}}
    ),
    "sink": svc("sink", inputs={"ticks": {"nats": "relayed.>"}}),
}


# --------------------------------------------------------------------------- delivery


async def test_source_transform_sink_delivers_every_message_in_order(tmp_path: Path) -> None:
    rt = runtime(topology(tmp_path, PIPELINE), tmp_path / "data")
    await run(rt)
    assert SEEN["sink"] == list(range(1, 51))
    assert {(source, symbol) for _, source, symbol, _ in SEEN["sink:detail"]} == {("relay", "EURUSD")}
    assert all(origin == "relayed.EURUSD" for *_, origin in SEEN["sink:detail"])
    m = metrics(rt)
    assert (m["source"]["out"], m["relay"]["in"], m["relay"]["out"], m["sink"]["in"]) == (50, 50, 50, 50)
    assert all(s["state"] == "stopped" and s["errors"] == 0 and s["dead_lettered"] == 0 for s in m.values())


async def test_invalid_message_is_dead_lettered_and_the_node_goes_on(tmp_path: Path) -> None:
    services = copy.deepcopy(PIPELINE)
    services["source"]["params"] = {"count": 6, "bad": [3]}
    bus = InProcessPubSub()
    await bus.connect()
    live: list[tuple[str, dict]] = []

    async def monitor(subject: str, payload: dict, headers: Any) -> None:
        live.append((subject, payload))

    await bus.subscribe("deadletter.>", monitor)
    data = tmp_path / "data"
    rt = runtime(topology(tmp_path, services), data, pubsub=bus)
    await run(rt)

    assert SEEN["sink"] == [1, 2, 4, 5, 6]  # not delivered, and later messages still flow
    assert SEEN["source:published"][2] == (3, False)
    [letter] = dead_letters(data, "source")
    assert letter["payload"]["seq"] == 3
    assert letter["service"] == "source"
    assert letter["contract"] == "tick.v1"
    assert "tick.v1" in letter["reason"] and "bid" in letter["reason"]
    assert [s for s, _ in live] == ["deadletter.source"]
    assert live[0][1]["payload"]["seq"] == 3
    m = metrics(rt)["source"]
    assert (m["out"], m["dead_lettered"], m["restarts"], m["state"]) == (5, 1, 0, "stopped")
    assert dead_letters(data, "sink") == []


@pytest.mark.parametrize(
    ("mode", "delivered", "rejected"),
    [
        ("strict", [3, 5, 6, 8, 9], [1, 2, 4, 7]),
        ("sampled", [2, 3, 5, 6, 8, 9], [1, 4, 7]),  # every 3rd tick.v1 message is checked: #1, #4, #7
        ("off", list(range(1, 10)), []),
    ],
)
async def test_the_topology_validation_mode_governs_the_publish_boundary(
    tmp_path: Path, mode: str, delivered: list[int], rejected: list[int]
) -> None:
    services = {
        "source": svc("source", params={"count": 9, "bad": [1, 2, 4, 7]}, outputs={"ticks": {"nats": "ticks.{symbol}"}}),
        "sink": svc("sink", inputs={"ticks": {"nats": "ticks.>"}}),
    }
    data = tmp_path / "data"
    rt = runtime(topology(tmp_path, services, runtime={"validation": mode, "sample_every": 3}), data)
    await run(rt)
    assert SEEN["sink"] == delivered
    assert [d["payload"]["seq"] for d in dead_letters(data, "source")] == rejected
    assert metrics(rt)["source"]["dead_lettered"] == len(rejected)


async def test_handler_error_dead_letters_that_message_only(tmp_path: Path) -> None:
    services = copy.deepcopy(PIPELINE)
    services["source"]["params"] = {"count": 6}
    services["sink"]["params"] = {"fail_on": [2, 4]}
    data = tmp_path / "data"
    rt = runtime(topology(tmp_path, services), data)
    await run(rt)

    assert SEEN["sink"] == [1, 3, 5, 6]
    letters = dead_letters(data, "sink")
    assert [d["payload"]["seq"] for d in letters] == [2, 4]
    assert all("handler error: ValueError: cannot take seq" in d["reason"] for d in letters)
    assert all(d["origin"] == "relayed.EURUSD" for d in letters)
    m = metrics(rt)["sink"]
    assert (m["in"], m["errors"], m["dead_lettered"], m["restarts"]) == (6, 2, 2, 0)
    assert "cannot take seq 4" in m["last_error"]


# --------------------------------------------------------------------------- supervision

FAST_RESTART = {"backoff_initial": 0.02, "backoff_max": 0.2}


async def test_consecutive_handler_failures_restart_the_node_only(tmp_path: Path) -> None:
    services = {
        "flaky": svc("sink", params={"fail_on": [2, 4, 5, 6]}, inputs={"ticks": {"nats": "ticks.>"}}),
        "steady": svc("sink", inputs={"ticks": {"nats": "ticks.>"}}),
    }
    topo = topology(tmp_path, services, runtime={"restart": {**FAST_RESTART, "failures_before_restart": 3}})
    bus = InProcessPubSub()
    await bus.connect()
    rt = runtime(topo, tmp_path / "data", pubsub=bus)
    await rt.start()
    try:
        for seq in range(1, 6):  # fails on 2 (then 3 succeeds: not consecutive), 4 and 5
            await bus.publish("ticks.EURUSD", tick(seq))
        await asyncio.sleep(0.1)
        assert metrics(rt)["flaky"]["restarts"] == 0

        await bus.publish("ticks.EURUSD", tick(6))  # third consecutive failure
        await until(lambda: metrics(rt)["flaky"]["restarts"] == 1 and metrics(rt)["flaky"]["state"] == "running")
        for seq in (7, 8):
            await bus.publish("ticks.EURUSD", tick(seq))

        assert SEEN["flaky"] == [1, 3, 7, 8]
        first, *_, last = [instance for instance, *_ in SEEN["flaky:detail"]]
        assert first != last  # a new instance took over
        assert SEEN["steady"] == list(range(1, 9))
        assert metrics(rt)["steady"]["state"] == "running" and metrics(rt)["steady"]["restarts"] == 0
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert EVENTS.count(("start", "flaky")) == 2
    assert EVENTS.count(("stop", "flaky")) == 2  # on_stop before the restart, and at shutdown


async def test_crashing_run_restarts_with_backoff_then_gives_up_alone(tmp_path: Path) -> None:
    services = {
        "crasher": svc("crasher", outputs={"ticks": {"nats": "ticks.{symbol}"}}),
        "ticker": svc("ticker", outputs={"ticks": {"nats": "ticks.{symbol}"}}),
        "sink": svc("sink", inputs={"ticks": {"nats": "ticks.{symbol}"}}),
    }
    topo = topology(
        tmp_path, services, runtime={"clock": "wall", "restart": {"backoff_initial": 0.05, "backoff_max": 1.0, "max_restarts": 2}}
    )
    rt = runtime(topo, tmp_path / "data")
    await rt.start()
    try:
        await until(lambda: metrics(rt)["crasher"]["state"] == "failed")
        attempts = SEEN["crasher:attempts"]
        assert len(attempts) == 3  # the first run and two restarts
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.05 * 0.9 and gaps[1] >= 0.10 * 0.9  # exponential backoff
        m = metrics(rt)["crasher"]
        assert (m["restarts"], m["errors"]) == (2, 3)
        assert "feed disconnected" in m["last_error"]

        seen = len(SEEN["sink"])
        await until(lambda: len(SEEN["sink"]) > seen + 3)  # the others keep running
        assert metrics(rt)["ticker"]["state"] == "running"
        assert metrics(rt)["sink"]["state"] == "running"
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert metrics(rt)["crasher"]["state"] == "failed"
    assert metrics(rt)["sink"]["state"] == "stopped"


# --------------------------------------------------------------------------- lifecycle


async def test_consumers_start_before_producers_and_stop_after_them(tmp_path: Path) -> None:
    # declared consumer-first, so declaration order alone would start the producer first
    services = {
        "sink": svc("sink", inputs={"ticks": {"nats": "relayed.>"}}),
        "relay": svc("relay", inputs={"ticks": {"nats": "ticks.>"}}, outputs={"out": {"nats": "relayed.{symbol}"}}),
        "producer": svc("start_publisher", outputs={"ticks": {"nats": "ticks.{symbol}"}}),
    }
    rt = runtime(topology(tmp_path, services), tmp_path / "data")
    await rt.start()
    await asyncio.wait_for(rt.stop(), TIMEOUT)

    assert rt.order == ["producer", "relay", "sink"]  # publisher first
    starts = [s for e, s in EVENTS if e == "start"]
    stops = [s for e, s in EVENTS if e == "stop"]
    assert starts == ["sink", "relay", "producer"]
    assert stops == ["producer", "relay", "sink"]
    assert SEEN["sink"] == [1]  # what the producer published while starting was not lost


async def test_stop_flushes_table_batches(tmp_path: Path) -> None:
    store_dir = tmp_path / "ch"
    services = {
        "source": svc(
            "source", params={"count": 25}, outputs={"ticks": {"nats": "ticks.{symbol}", "tables": "test_ticks"}}
        ),
        "sink": svc("sink", inputs={"ticks": {"nats": "ticks.>"}}),
    }
    topo = topology(
        tmp_path,
        services,
        stores={"ch": {"kind": "clickhouse", "url": f"chdb://{store_dir}"}},
        tables={"test_ticks": {"store": "ch", "contract": "tick.v1", "order_by": ["symbol", "ts"]}},
        runtime={"batch_size": 100_000, "batch_interval": "1h"},  # only stop can write them
    )
    rt = runtime(topo, tmp_path / "data")
    await run(rt)
    assert SEEN["sink"] == list(range(1, 26))

    store = ClickHouseStore("check", f"chdb://{store_dir}")
    await store.connect()
    try:
        rows = await store.query("SELECT seq, ts, bid, source FROM test_ticks ORDER BY seq")
    finally:
        await store.close()
    assert [r["seq"] for r in rows] == list(range(1, 26))
    assert rows[0]["ts"] == T0 and rows[0]["source"] == "test"


def _log_topology(tmp_path: Path, first: int, count: int, io_delay_s: float = 0.0) -> Topology:
    services = {
        "source": svc("source", params={"first": first, "count": count}, outputs={"ticks": {"kafka": "tick_log"}}),
        "archiver": svc(
            "sink", params={"io_delay_s": io_delay_s}, inputs={"ticks": {"kafka": "tick_log", "group": "archiver-group"}}
        ),
    }
    return topology(tmp_path, services, topics={"tick_log": {"partitions": 2, "key": "symbol"}})


async def test_persisted_log_resumes_committed_offsets_across_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = runtime(_log_topology(tmp_path, first=1, count=5), data)
    await run(first)
    assert SEEN["archiver"] == [1, 2, 3, 4, 5]
    assert SEEN["archiver:detail"][0][3].startswith("tick_log[")  # origin names topic[partition]@offset

    SEEN.clear()
    second = runtime(_log_topology(tmp_path, first=6, count=5), data)
    await run(second)
    assert SEEN["archiver"] == [6, 7, 8, 9, 10]  # committed records are not processed again
    assert (data / "log").is_dir()


async def test_log_consumer_drains_what_sources_produced_before_stopping(tmp_path: Path) -> None:
    """A consumer whose handler awaits I/O still handles every record before the run ends."""
    rt = runtime(_log_topology(tmp_path, first=1, count=30, io_delay_s=0.002), tmp_path / "data")
    await run(rt)
    assert SEEN["archiver"] == list(range(1, 31))


# --------------------------------------------------------------------------- selection


async def test_only_runs_a_subset(tmp_path: Path) -> None:
    rt = runtime(topology(tmp_path, PIPELINE), tmp_path / "data", only=["source", "relay"])
    assert rt.services == ["source", "relay"]
    await run(rt)
    assert SEEN["sink"] == []
    assert ("start", "sink") not in EVENTS
    assert set(metrics(rt)) == {"source", "relay"}
    assert metrics(rt)["relay"]["out"] == 50


async def test_disabled_service_in_only_is_a_user_error(tmp_path: Path) -> None:
    services = copy.deepcopy(PIPELINE)
    services["sink"]["enabled"] = False
    topo = topology(tmp_path, services)
    assert runtime(topo, tmp_path / "data").services == ["source", "relay"]  # skipped without `only`
    with pytest.raises(UserError, match="'sink' is disabled"):
        runtime(topo, tmp_path / "data", only=["sink"])


@pytest.mark.parametrize(("pairs", "expected"), [(["EURUSD", "XAUUSD"], ["EURUSD", "XAUUSD"]), (None, ["EURUSD", "GBPUSD", "XAUUSD"])])
async def test_pairs_restrict_symbol_subscriptions(tmp_path: Path, pairs: list[str] | None, expected: list[str]) -> None:
    services = {"sink": svc("sink", inputs={"ticks": {"nats": "ticks.{symbol}"}})}
    bus = InProcessPubSub()
    await bus.connect()
    rt = runtime(topology(tmp_path, services), tmp_path / "data", pubsub=bus, pairs=pairs)
    await rt.start()
    try:
        for seq, symbol in enumerate(["EURUSD", "GBPUSD", "XAUUSD"], 1):
            await bus.publish(f"ticks.{symbol}", tick(seq, symbol=symbol))
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert [symbol for _, _, symbol, _ in SEEN["sink:detail"]] == expected
    assert rt.hosts["sink"].ctx.pairs == expected


# --------------------------------------------------------------------------- time and metrics


async def test_timer_runs_on_the_simulated_clock_as_event_time_advances(tmp_path: Path) -> None:
    services = {
        "source": svc("source", params={"count": 10, "step_ms": 30_000}, outputs={"ticks": {"nats": "ticks.{symbol}"}}),
        "stats": svc("periodic", params={"period": "1m"}, inputs={"ticks": {"nats": "ticks.>"}}),
    }
    rt = runtime(topology(tmp_path, services), tmp_path / "data")
    await run(rt)  # 4.5 minutes of event time, in well under the test's timeout
    # ticks at T0, T0+30s, … T0+270s; the timer counts from the first event and fires before
    # the tick that carries time past its deadline
    assert SEEN["stats"] == [(T0 + 60_000, 2), (T0 + 120_000, 4), (T0 + 180_000, 6), (T0 + 240_000, 8)]


async def test_metrics_json_is_written(tmp_path: Path) -> None:
    services = copy.deepcopy(PIPELINE)
    services["source"]["params"] = {"count": 7, "bad": [7]}
    data = tmp_path / "data"
    rt = runtime(topology(tmp_path, services), data)
    await run(rt)
    doc = orjson.loads((data / "metrics.json").read_bytes())
    assert isinstance(doc["ts"], int)
    by_name = {s["service"]: s for s in doc["services"]}
    assert [s["service"] for s in doc["services"]] == rt.order
    assert (by_name["source"]["out"], by_name["source"]["dead_lettered"]) == (6, 1)
    assert by_name["sink"]["in"] == 6 and by_name["sink"]["ports"] == {"ticks": 6}


# --------------------------------------------------------------------------- start order with cycles


def test_order_graph_puts_a_cycle_after_its_publishers_and_before_its_consumers() -> None:
    # a → b, b ⇄ c, c → d, declared in an order that a naive "take the first" tie-break breaks
    edges = {"d": [], "b": ["c"], "c": ["b", "d"], "a": ["b"]}
    assert order_graph(["d", "b", "c", "a"], edges) == ["a", "b", "c", "d"]


def test_order_graph_is_stable_for_independent_services_and_orders_a_dag() -> None:
    edges = {"x": [], "y": [], "src": ["mid"], "mid": ["out"], "out": []}
    assert order_graph(["x", "out", "y", "mid", "src"], edges) == ["x", "y", "src", "mid", "out"]


def test_order_graph_keeps_declaration_order_inside_a_cycle() -> None:
    edges = {"exec": ["broker"], "broker": ["exec", "monitor"], "risk": ["exec"], "monitor": []}
    assert order_graph(["monitor", "exec", "broker", "risk"], edges) == ["risk", "exec", "broker", "monitor"]


# --------------------------------------------------------------------------- backlog and restarts


async def test_a_group_backlog_waiting_at_start_is_handled_not_dead_lettered(tmp_path: Path) -> None:
    """A consumer started after its producer (its own process, or a restart) gets the backlog."""
    data = tmp_path / "data"
    topo = _log_topology(tmp_path, first=1, count=5)
    await run(runtime(topo, data, only=["source"]))
    assert SEEN["archiver"] == []

    await run(runtime(topo, data, only=["archiver"]), duration=1.0)
    assert SEEN["archiver"] == [1, 2, 3, 4, 5]
    assert dead_letters(data, "archiver") == []

    SEEN.clear()
    await run(runtime(topo, data, only=["archiver"]), duration=0.3)
    assert SEEN["archiver"] == []  # committed once handled


async def test_records_wait_for_a_restarting_node_instead_of_being_dead_lettered(tmp_path: Path) -> None:
    services = {
        "source": svc("source", params={"count": 12}, outputs={"ticks": {"kafka": "tick_log"}}),
        "archiver": svc("sink", params={"fail_on": [3]}, inputs={"ticks": {"kafka": "tick_log", "group": "g"}}),
    }
    topo = topology(
        tmp_path,
        services,
        topics={"tick_log": {"partitions": 1, "key": "symbol"}},
        runtime={"restart": {**FAST_RESTART, "failures_before_restart": 1}},
    )
    data = tmp_path / "data"
    rt = runtime(topo, data)
    await run(rt)
    assert metrics(rt)["archiver"]["restarts"] == 1
    assert SEEN["archiver"] == [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # the rest waited for the new instance
    assert [d["reason"] for d in dead_letters(data, "archiver")] == ["handler error: ValueError: cannot take seq 3"]


async def test_a_failed_consumer_leaves_its_records_uncommitted_for_the_next_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    failing = {
        "source": svc("source", params={"count": 6}, outputs={"ticks": {"kafka": "tick_log"}}),
        "archiver": svc("sink", params={"fail_on": [1, 2, 3, 4, 5, 6]}, inputs={"ticks": {"kafka": "tick_log", "group": "g"}}),
    }
    log_topic = {"tick_log": {"partitions": 1, "key": "symbol"}}
    restart = {"restart": {**FAST_RESTART, "failures_before_restart": 1, "max_restarts": 1}}
    rt = runtime(topology(tmp_path, failing, topics=log_topic, runtime=restart), data)
    await run(rt)
    assert metrics(rt)["archiver"]["state"] == "failed"
    failed_on = [d["payload"]["seq"] for d in dead_letters(data, "archiver")]
    assert failed_on == [1, 2]  # one failure, a restart, a second failure: then it gave up

    fixed = copy.deepcopy(failing)
    fixed["archiver"]["params"] = {}
    SEEN.clear()
    await run(runtime(topology(tmp_path, fixed, topics=log_topic), data, only=["archiver"]), duration=1.0)
    assert SEEN["archiver"] == [3, 4, 5, 6]  # what it never handled was redelivered, nothing lost


async def test_restart_budget_is_given_back_after_a_healthy_period(tmp_path: Path) -> None:
    services = {"flaky": svc("sink", params={"fail_on": [1, 2, 3]}, inputs={"ticks": {"nats": "ticks.>"}})}
    # reset_after_s leaves room on a loaded machine for the quick second failure below (it must come within it)
    policy = {**FAST_RESTART, "failures_before_restart": 1, "max_restarts": 1, "reset_after_s": 1.0}
    topo = topology(tmp_path, services, runtime={"restart": policy})
    bus = InProcessPubSub()
    await bus.connect()
    rt = runtime(topo, tmp_path / "data", pubsub=bus)
    await rt.start()
    try:
        await bus.publish("ticks.EURUSD", tick(1))
        await until(lambda: metrics(rt)["flaky"]["restarts"] == 1 and metrics(rt)["flaky"]["state"] == "running")
        await asyncio.sleep(1.3)  # healthy for longer than reset_after_s
        await bus.publish("ticks.EURUSD", tick(2))
        await until(lambda: metrics(rt)["flaky"]["state"] == "running" and rt.hosts["flaky"].node is not None)
        assert metrics(rt)["flaky"]["state"] != "failed"
        await bus.publish("ticks.EURUSD", tick(3))  # fails again at once: the budget of 1 is used up now
        await until(lambda: metrics(rt)["flaky"]["state"] == "failed")
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)


async def test_handler_failure_is_logged_with_service_node_origin_and_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    services = {"flaky": svc("sink", params={"fail_on": [1]}, inputs={"ticks": {"nats": "ticks.>"}})}
    bus = InProcessPubSub()
    await bus.connect()
    rt = runtime(topology(tmp_path, services), tmp_path / "data", pubsub=bus)
    await rt.start()
    try:
        with caplog.at_level(logging.ERROR, logger="fxflow.runtime"):
            await bus.publish("ticks.EURUSD", tick(1))
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    record = next(r for r in caplog.records if "handler failed" in r.getMessage())
    message = record.getMessage()
    assert "flaky" in message and "node sink" in message and "ticks.EURUSD" in message
    assert "ValueError: cannot take seq 1" in message
    assert record.exc_info is not None  # the first failure of a service carries its traceback


async def test_stop_during_restart_backoff_does_not_start_the_node_again(tmp_path: Path) -> None:
    services = {"flaky": svc("sink", params={"fail_on": [1]}, inputs={"ticks": {"nats": "ticks.>"}})}
    policy = {"backoff_initial": 60.0, "backoff_max": 60.0, "failures_before_restart": 1}
    bus = InProcessPubSub()
    await bus.connect()
    rt = runtime(topology(tmp_path, services, runtime={"restart": policy}), tmp_path / "data", pubsub=bus)
    await rt.start()
    await bus.publish("ticks.EURUSD", tick(1))
    await until(lambda: metrics(rt)["flaky"]["state"] == "restarting")
    started = time.monotonic()
    await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert time.monotonic() - started < 30.0  # the 60 s backoff was cut short by the stop (with room for a loaded machine)
    assert EVENTS.count(("start", "flaky")) == 1
    assert rt.hosts["flaky"].node is None
    assert metrics(rt)["flaky"]["state"] == "stopped"


async def test_counters_are_readable_over_http_and_in_metrics_json_while_running(tmp_path: Path) -> None:
    import aiohttp

    services = {"sink": svc("sink", inputs={"ticks": {"nats": "ticks.>"}})}
    topo = topology(tmp_path, services, runtime={"metrics_port": 0, "metrics_interval": "50ms"})
    bus = InProcessPubSub()
    await bus.connect()
    data = tmp_path / "data"
    rt = runtime(topo, data, pubsub=bus)
    await rt.start()

    def from_json() -> int:
        path = data / "metrics.json"
        if not path.exists():
            return -1
        return {s["service"]: s for s in orjson.loads(path.read_bytes())["services"]}["sink"]["in"]

    async def from_http(session: aiohttp.ClientSession) -> int:
        async with session.get(f"http://127.0.0.1:{rt.observability.port}/metrics") as response:
            text = await response.text()
        line = next(ln for ln in text.splitlines() if ln.startswith('fxflow_messages_received_total{service="sink"}'))
        return int(float(line.rsplit(" ", 1)[1]))

    try:
        async with aiohttp.ClientSession() as session:
            for seq in range(1, 4):
                await bus.publish("ticks.EURUSD", tick(seq))
            await until(lambda: from_json() == 3)
            assert await from_http(session) == 3
            for seq in range(4, 11):
                await bus.publish("ticks.EURUSD", tick(seq))
            await until(lambda: from_json() == 10)
            assert await from_http(session) == 10
            async with session.get(f"http://127.0.0.1:{rt.observability.port}/health") as response:
                assert response.status == 200
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)


async def test_a_source_asleep_on_simulated_time_nothing_can_move_ends_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    services = {
        "source": svc("source", params={"count": 3}, outputs={"ticks": {"nats": "ticks.{symbol}"}}),
        "poller": svc("clock_sleeper"),
        "sink": svc("sink", inputs={"ticks": {"nats": "ticks.>"}}),
    }
    rt = runtime(topology(tmp_path, services), tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="fxflow.runtime"):
        await run(rt, duration=None)  # would wait forever: nothing moves event time past T0+2s
    assert SEEN["sink"] == [1, 2, 3] and SEEN["poller"] == []
    assert any("poller wait(s) for simulated time" in r.getMessage() for r in caplog.records)
    assert metrics(rt)["poller"]["state"] == "stopped"


async def test_a_node_failing_in_on_start_is_isolated_and_retried_the_others_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    services = {**copy.deepcopy(PIPELINE), "broken": svc("bad_start", inputs={"ticks": {"nats": "ticks.>"}})}
    policy = {**FAST_RESTART, "max_restarts": 2}
    rt = runtime(topology(tmp_path, services, runtime={"restart": policy}), tmp_path / "data")
    with caplog.at_level(logging.ERROR, logger="fxflow.runtime"):
        await run(rt)
    assert SEEN["sink"] == list(range(1, 51))  # the pipeline beside it ran in full
    assert len(SEEN["broken:starts"]) == 3  # the first start and two retries
    m = metrics(rt)["broken"]
    assert (m["state"], m["restarts"], m["errors"]) == ("failed", 2, 3)
    assert "cannot reach the model registry" in m["last_error"]
    failed = [r for r in caplog.records if "on_start failed" in r.getMessage()]
    assert failed and "broken (node bad_start)" in failed[0].getMessage() and failed[0].exc_info is not None
    letters = dead_letters(tmp_path / "data", "broken")  # what it never could take is kept, with the reason
    assert sorted(d["payload"]["seq"] for d in letters) == list(range(1, 51))
    assert {d["reason"] for d in letters} == {"service broken gave up after repeated failures (see its last_error)"}


async def test_a_user_mistake_in_on_start_stops_the_run_before_it_goes_on(tmp_path: Path) -> None:
    services = {**copy.deepcopy(PIPELINE), "broken": svc("bad_start", params={"user_error": True}, inputs={"ticks": {"nats": "ticks.>"}})}
    rt = runtime(topology(tmp_path, services), tmp_path / "data")
    with pytest.raises(UserError, match="KEY is not set"):
        await run(rt)
    assert SEEN["sink"] == []


async def test_a_metrics_port_in_use_is_one_user_error_before_any_node_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rt = runtime(topology(tmp_path, copy.deepcopy(PIPELINE), runtime={"metrics_port": port}), tmp_path / "data")
        with pytest.raises(UserError, match=f"cannot serve metrics on port {port}") as info:
            await run(rt)
    assert info.value.path == "runtime.metrics_port"
    assert not any(event == "start" for event, _ in EVENTS)
