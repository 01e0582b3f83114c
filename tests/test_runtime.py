"""The generic runtime: small topologies of test nodes run on the real transports, stores and contracts."""

from __future__ import annotations

import asyncio
import copy
import itertools
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
from framework.runtime import Runtime
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


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
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
