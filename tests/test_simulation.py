"""The simulation driver and the mailboxes: event-time order, FIFO delivery, no re-entrancy, request/reply, state."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from framework.node import Node, every, handles
from framework.registry import NodeSpec, Port, Registry
from framework.runtime import Runtime
from tests.test_runtime import CONTRACTS, T0, TIMEOUT, tick, topology

LOG: list[Any] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    LOG.clear()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeedParams(Strict):
    symbol: str = "EURUSD"
    offset_ms: int = 0
    step_ms: int = 1_000
    count: int = 20
    thread_every: int = 0
    """Send a piece of work to a thread every this many ticks (0: never)."""


class Feed(Node[FeedParams]):
    """An event-time source: one tick every ``step_ms`` from ``T0 + offset_ms``."""

    async def run(self) -> None:
        p = self.params
        for seq in range(1, p.count + 1):
            ts = T0 + p.offset_ms + (seq - 1) * p.step_ms
            await self.ctx.clock.wait_until(ts)
            if p.thread_every and seq % p.thread_every == 0:
                await asyncio.to_thread(sum, range(20_000))
            await self.ctx.publish("ticks", tick(seq, ts, symbol=p.symbol))


class Recorder(Node[Strict]):
    """Records each delivery with the clock's time, and marks when its handler runs."""

    async def on_start(self) -> None:
        self.inside = False

    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        assert not self.inside, "re-entered"
        self.inside = True
        LOG.append(("tick", message["symbol"], message["ts"], self.ctx.clock.now_ms()))
        await asyncio.sleep(0)
        self.inside = False

    @every("1s")
    async def each_second(self) -> None:
        LOG.append(("timer", self.ctx.clock.now_ms()))


class PingParams(Strict):
    rounds: int = 3


class Ping(Node[PingParams]):
    """One side of a cycle: answers every pong with a ping until ``rounds``; records its entries and exits."""

    async def on_start(self) -> None:
        self.inside = False

    async def run(self) -> None:
        await self.ctx.clock.wait_until(T0)
        await self.ctx.publish("out", tick(1, T0, symbol="EURUSD"))

    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        assert not self.inside, "re-entered"
        self.inside = True
        LOG.append(("enter", self.ctx.service, message["seq"]))
        if message["seq"] < self.params.rounds:
            await self.ctx.publish("out", {**message, "seq": message["seq"] + 1})
            await self.ctx.publish("out", {**message, "seq": 100 + message["seq"]})  # a second one behind it
        LOG.append(("exit", self.ctx.service, message["seq"]))
        self.inside = False


class Pong(Node[Strict]):
    async def on_start(self) -> None:
        self.inside = False

    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        assert not self.inside, "re-entered"
        self.inside = True
        LOG.append(("enter", self.ctx.service, message["seq"]))
        if message["seq"] < 100:
            await self.ctx.publish("out", message)
        LOG.append(("exit", self.ctx.service, message["seq"]))
        self.inside = False


class Asker(Node[Strict]):
    async def run(self) -> None:
        await self.ctx.clock.wait_until(T0)
        for seq in (1, 2, 3):
            reply = await self.ctx.request("ask", tick(seq, T0))
            LOG.append(("reply", reply["seq"], reply["source"]))


class Answerer(Node[Strict]):
    @handles("ask")
    async def on_ask(self, message: dict) -> dict:
        return {**message, "seq": message["seq"] * 10, "source": "answer"}


class CounterParams(Strict):
    pass


class Counter(Node[CounterParams]):
    """Counts ticks across restarts through snapshot/restore."""

    state_version = 2

    async def on_start(self) -> None:
        if not hasattr(self, "count"):
            self.count = 0

    def restore(self, state: Any) -> None:
        self.count = state["count"]

    def snapshot(self) -> Any:
        return {"count": self.count}

    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        self.count += 1
        LOG.append(("count", self.count))


def _spec(name: str, cls: type[Node], params: type[BaseModel], inputs=(), outputs=(), role="transform") -> NodeSpec:
    return NodeSpec(
        name=name, factory=f"{__name__}:{cls.__name__}", params=params,
        inputs={p: Port("tick.v1") for p in inputs}, outputs={p: Port("tick.v1") for p in outputs}, role=role,
    )  # fmt: skip


REGISTRY = Registry()
for _s in (
    _spec("feed", Feed, FeedParams, outputs=["ticks"], role="source"),
    _spec("recorder", Recorder, Strict, inputs=["ticks"], role="sink"),
    _spec("ping", Ping, PingParams, inputs=["ticks"], outputs=["out"], role="source"),
    _spec("pong", Pong, Strict, inputs=["ticks"], outputs=["out"]),
    _spec("asker", Asker, Strict, outputs=["ask"], role="source"),
    _spec("answerer", Answerer, Strict, inputs=["ask"]),
    _spec("counter", Counter, CounterParams, inputs=["ticks"], role="sink"),
):
    REGISTRY.register(_s)


def runtime(tmp_path: Path, services: dict[str, Any], **kw: Any) -> Runtime:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return Runtime(topology(tmp_path, services, **kw.pop("extra", {})), REGISTRY, CONTRACTS, data_dir=tmp_path / "run", **kw)


FEEDS = {
    "a": {"node": "feed", "phase": "data", "params": {"symbol": "EURUSD", "step_ms": 1_000, "thread_every": 7},
          "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
    "b": {"node": "feed", "phase": "data", "params": {"symbol": "XAUUSD", "offset_ms": 500, "step_ms": 700, "count": 30},
          "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
    "rec": {"node": "recorder", "phase": "data", "inputs": {"ticks": {"nats": "ticks.{symbol}"}}},
}  # fmt: skip


async def test_sources_interleave_in_event_time_and_every_delivery_sees_its_own_time(tmp_path: Path) -> None:
    rt = runtime(tmp_path, FEEDS)
    await asyncio.wait_for(rt.run(), TIMEOUT)
    ticks = [e for e in LOG if e[0] == "tick"]
    assert len(ticks) == 50
    times = [ts for _, _, ts, _ in ticks]
    assert times == sorted(times)  # the two feeds merged in event-time order
    assert all(now == ts for _, _, ts, now in ticks)  # the clock never ran ahead of a delivery
    timers = [now for kind, now, *_ in LOG if kind == "timer"]
    assert timers == [T0 + k * 1_000 for k in range(1, len(timers) + 1)] and len(timers) >= 19
    order = [(e[0], e[2] if e[0] == "tick" else e[1]) for e in LOG]
    for i, (kind, when) in enumerate(order):  # a timer of an instant fires before that instant's data
        if kind == "timer":
            assert all(t < when for k, t in order[:i] if k == "tick") and all(t >= when for k, t in order[i + 1 :] if k == "tick")


async def test_two_runs_give_the_same_deliveries_in_the_same_order(tmp_path: Path) -> None:
    runs = []
    for n in range(3):
        LOG.clear()
        rt = runtime(tmp_path / str(n), FEEDS)
        await asyncio.wait_for(rt.run(), TIMEOUT)
        runs.append(list(LOG))
    assert runs[0] == runs[1] == runs[2]


CYCLE = {
    "ping": {"node": "ping", "phase": "data", "params": {"rounds": 3},
             "inputs": {"ticks": {"nats": "pong.{symbol}"}}, "outputs": {"out": {"nats": "ping.{symbol}"}}},
    "pong": {"node": "pong", "phase": "data",
             "inputs": {"ticks": {"nats": "ping.{symbol}"}}, "outputs": {"out": {"nats": "pong.{symbol}"}}},
}  # fmt: skip


@pytest.mark.parametrize("clock", ["simulated", "wall", "nats"])
async def test_a_cycle_of_services_is_never_re_entered(tmp_path: Path, clock: str, request: pytest.FixtureRequest) -> None:
    kw: dict[str, Any] = {}
    if clock == "nats":  # the same two subscriptions on a real server, where a callback per message would run concurrently
        kw["pubsub"] = _nats_bus(request.getfixturevalue("nats_server"), "ping,pong")
        clock = "wall"
    rt = runtime(tmp_path, CYCLE, extra={"domains": ["ticks", "ping", "pong", "deadletter"], "runtime": {"clock": clock}}, **kw)
    await rt.start()
    try:
        await asyncio.wait_for(_until(lambda: ("exit", "ping", 3) in LOG), TIMEOUT)
        await asyncio.sleep(0.05)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    for service in ("ping", "pong"):  # each handler exits before the same node is entered again
        own = [e for e in LOG if e[1] == service]
        assert all(a[0] == "enter" and b[0] == "exit" and a[2] == b[2] for a, b in zip(own[::2], own[1::2]))
    if clock == "simulated":  # one queue for the run: first in, first out, never nested
        assert all(a[0] == "enter" and b[0] == "exit" for a, b in zip(LOG[::2], LOG[1::2]))
        entered = [(e[1], e[2]) for e in LOG if e[0] == "enter"]  # breadth first: 101 before the reply to 2
        assert entered == [("pong", 1), ("ping", 1), ("pong", 2), ("pong", 101), ("ping", 2), ("pong", 3), ("pong", 102), ("ping", 3)]


def _nats_bus(server: Any, services: str) -> Any:
    from framework.topology.model import NatsConfig
    from framework.transport.nats import NatsPubSub

    return NatsPubSub(NatsConfig(servers=[server.url]), name="fxflow-test", service=services)


class TwoPortsParams(Strict):
    expect: int = 0


class TwoPorts(Node[TwoPortsParams]):
    """Two subscriptions into one node, each handler yielding to the loop while it works."""

    async def on_start(self) -> None:
        self.inside: str | None = None

    async def _work(self, port: str, message: dict) -> None:
        LOG.append(("overlap", self.inside, port) if self.inside else ("in", port, message["seq"]))
        self.inside = port
        await asyncio.sleep(0.001)
        self.inside = None

    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        await self._work("ticks", message)

    @handles("other")
    async def on_other(self, message: dict) -> None:
        await self._work("other", message)


REGISTRY.register(NodeSpec(name="two_ports", factory=f"{__name__}:TwoPorts", params=TwoPortsParams,
                           inputs={"ticks": Port("tick.v1"), "other": Port("tick.v1")}, role="sink"))  # fmt: skip


async def test_one_node_handles_one_message_at_a_time_across_its_nats_subscriptions(tmp_path: Path, nats_server) -> None:
    services = {
        "a": {"node": "burst", "phase": "data", "params": {"count": 150}, "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
        "b": {"node": "burst", "phase": "data", "params": {"count": 150}, "outputs": {"ticks": {"nats": "other.{symbol}"}}},
        "both": {"node": "two_ports", "phase": "data",
                 "inputs": {"ticks": {"nats": "ticks.{symbol}"}, "other": {"nats": "other.{symbol}"}}},
    }  # fmt: skip
    bus = _nats_bus(nats_server, "a,b,both")
    rt = runtime(tmp_path, services, extra={"domains": ["ticks", "other", "deadletter"], "runtime": {"clock": "wall"}}, pubsub=bus)
    await rt.start()
    try:
        await asyncio.wait_for(_until(lambda: len([e for e in LOG if e[0] in ("in", "overlap")]) >= 300), TIMEOUT)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert [e for e in LOG if e[0] == "overlap"] == []
    seen = [e for e in LOG if e[0] == "in"]
    assert sorted(q for _, port, q in seen if port == "ticks") == list(range(1, 151))
    assert sorted(q for _, port, q in seen if port == "other") == list(range(1, 151))


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


ASK = {
    "asker": {"node": "asker", "phase": "data", "outputs": {"ask": {"nats": "ask.one"}}},
    "answerer": {"node": "answerer", "phase": "data", "inputs": {"ask": {"nats": "ask.one"}}},
}


@pytest.mark.parametrize("clock", ["simulated", "wall"])
async def test_request_reply_through_the_runtime(tmp_path: Path, clock: str) -> None:
    rt = runtime(tmp_path, ASK, extra={"domains": ["ticks", "ask", "deadletter"], "runtime": {"clock": clock}})
    await asyncio.wait_for(rt.run(), TIMEOUT)
    assert LOG == [("reply", 10, "answer"), ("reply", 20, "answer"), ("reply", 30, "answer")]


async def test_request_reply_over_nats(tmp_path: Path, nats_server) -> None:
    from framework.topology.model import NatsConfig
    from framework.transport.nats import NatsPubSub

    bus = NatsPubSub(NatsConfig(servers=[nats_server.url]), name="fxflow-test", service="asker,answerer")
    rt = runtime(tmp_path, ASK, extra={"domains": ["ticks", "ask", "deadletter"], "runtime": {"clock": "wall"}}, pubsub=bus)
    await asyncio.wait_for(rt.run(), TIMEOUT)
    assert LOG == [("reply", 10, "answer"), ("reply", 20, "answer"), ("reply", 30, "answer")]


COUNT = {
    "feed": {"node": "feed", "phase": "data", "params": {"count": 5}, "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
    "counter": {"node": "counter", "phase": "data", "inputs": {"ticks": {"nats": "ticks.{symbol}"}}},
}


async def test_snapshot_at_stop_is_restored_at_the_next_start_and_a_foreign_one_set_aside(tmp_path: Path) -> None:
    for _ in range(2):
        rt = runtime(tmp_path, COUNT)
        await asyncio.wait_for(rt.run(), TIMEOUT)
    assert [c for _, c in LOG] == list(range(1, 11))  # the second run went on counting from 5
    state = tmp_path / "run" / "services" / "counter" / "state.json"
    assert state.exists()
    state.write_text('{"node": "counter", "version": 1, "state": {"count": 99}}')  # an older version
    LOG.clear()
    rt = runtime(tmp_path, COUNT)
    await asyncio.wait_for(rt.run(), TIMEOUT)
    assert [c for _, c in LOG] == [1, 2, 3, 4, 5]
    assert (tmp_path / "run" / "services" / "counter" / "state.json.stale").exists()


class BurstParams(Strict):
    count: int = 200


class Burst(Node[BurstParams]):
    """A wall-clock source publishing as fast as it can (two symbols, alternating)."""

    async def run(self) -> None:
        for seq in range(1, self.params.count + 1):
            await self.ctx.publish("ticks", tick(seq, T0 + seq, symbol="EURUSD" if seq % 2 else "XAUUSD"))
        LOG.append(("burst done", len([e for e in LOG if e[0] == "slow"])))


class Slow(Node[Strict]):
    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        await asyncio.sleep(0.002)
        LOG.append(("slow", message["symbol"], message["seq"]))


class Server(Node[Strict]):
    """A long-running ``run()`` that is no source (an HTTP server)."""

    async def run(self) -> None:
        LOG.append(("server up",))
        await asyncio.Event().wait()


for _s in (
    _spec("burst", Burst, BurstParams, outputs=["ticks"], role="source"),
    _spec("slow", Slow, Strict, inputs=["ticks"], role="sink"),
    _spec("server", Server, Strict, role="server"),
):
    REGISTRY.register(_s)


@pytest.mark.parametrize(
    "buffer",
    [{"size": 5, "policy": "drop_oldest"}, {"size": 5, "policy": "conflate", "key": "symbol"}, {"size": 5, "policy": "block"}],
    ids=lambda b: b["policy"],
)
async def test_a_slow_consumer_behind_a_buffer_does_not_hold_its_publisher(tmp_path: Path, buffer: dict) -> None:
    services = {
        "burst": {"node": "burst", "phase": "data", "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
        "slow": {"node": "slow", "phase": "data", "inputs": {"ticks": {"nats": "ticks.{symbol}", "buffer": buffer}}},
    }
    rt = runtime(tmp_path, services, extra={"runtime": {"clock": "wall"}})
    await asyncio.wait_for(rt.run(), TIMEOUT)
    got = [(s, q) for kind, *rest in LOG if kind == "slow" for s, q in [rest]]
    done_at = next(n for kind, *rest in LOG if kind == "burst done" for n in rest)
    stats = {m["service"]: m for m in rt.metrics()}["slow"]["buffers"]["ticks"]
    if buffer["policy"] == "block":  # nothing lost; the publisher waited for room
        assert [q for _, q in got] == list(range(1, 201)) and stats["dropped"] == 0
        return
    assert done_at < 200 and len(got) < 200  # the burst ended while the slow consumer was still at work
    assert got[-2:] in ([("XAUUSD", 200), ("EURUSD", 199)], [("EURUSD", 199), ("XAUUSD", 200)])  # the newest are kept
    assert stats["dropped"] + stats["conflated"] == 200 - len(got) and stats["high_water"] <= 5
    if buffer["policy"] == "conflate":
        assert stats["conflated"] > 0


@pytest.mark.parametrize("clock", ["simulated", "wall"])
async def test_a_server_does_not_keep_a_bounded_run_alive(tmp_path: Path, clock: str) -> None:
    services = {
        "feed": {"node": "feed", "phase": "data", "params": {"count": 3}, "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
        "rec": {"node": "recorder", "phase": "data", "inputs": {"ticks": {"nats": "ticks.{symbol}"}}},
        "web": {"node": "server", "phase": "support"},
    }
    rt = runtime(tmp_path, services, extra={"runtime": {"clock": clock}})
    await asyncio.wait_for(rt.run(), TIMEOUT)
    assert ("server up",) in LOG and len([e for e in LOG if e[0] == "tick"]) == 3


# --------------------------------------------------------------------------- batch ports


class ChunkFeedParams(Strict):
    count: int = 40
    chunk: int = 8
    bad: list[int] = []


class ChunkFeed(Node[ChunkFeedParams]):
    """A source that publishes its ticks in chunks (a backtest replaying history)."""

    async def run(self) -> None:
        from framework.chunk import Chunk

        p = self.params
        await self.ctx.clock.wait_until(T0)
        rows = [tick(s, T0 + s, symbol="EURUSD" if s % 3 else "XAUUSD", bid=-1.0 if s in p.bad else 1.1 + s / 1e4)
                for s in range(1, p.count + 1)]  # fmt: skip
        for i in range(0, len(rows), p.chunk):
            await self.ctx.publish_batch("ticks", Chunk.from_rows(rows[i : i + p.chunk]))


class Spread(Node[Strict]):
    """One kernel for chunks and single messages: the spread of each tick, in pips."""

    @handles("ticks", batch=True)
    async def on_ticks(self, chunk: Any) -> None:
        from framework.chunk import Chunk

        spreads = (chunk["ask"] - chunk["bid"]) * 10_000
        LOG.append(("chunk", len(chunk)))
        await self.ctx.publish_batch("out", Chunk({**{n: chunk[n] for n in chunk.names}, "bid": spreads.round(6), "ask": spreads.round(6) + 1}))


class SpreadSink(Node[Strict]):
    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        LOG.append(("spread", message["symbol"], message["ts"], message["bid"], message["seq"]))


for _s in (
    _spec("chunk_feed", ChunkFeed, ChunkFeedParams, outputs=["ticks"], role="source"),
    _spec("spread", Spread, Strict, inputs=["ticks"], outputs=["out"]),
    _spec("spread_sink", SpreadSink, Strict, inputs=["ticks"], role="sink"),
):
    REGISTRY.register(_s)


def _batch_services(source: str, **params: Any) -> dict[str, Any]:
    return {
        "src": {"node": source, "phase": "data", "params": params, "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
        "spread": {"node": "spread", "phase": "data", "inputs": {"ticks": {"nats": "ticks.{symbol}"}}, "outputs": {"out": {"nats": "spreads.{symbol}"}}},
        "rec": {"node": "spread_sink", "phase": "data", "inputs": {"ticks": {"nats": "spreads.{symbol}"}}},
    }  # fmt: skip


async def _spreads(tmp_path: Path, services: dict[str, Any], **extra: Any) -> tuple[list[Any], list[Any]]:
    LOG.clear()
    rt = runtime(tmp_path, services, extra={"domains": ["ticks", "spreads", "deadletter"], **extra})
    await asyncio.wait_for(rt.run(), TIMEOUT)
    return [e for e in LOG if e[0] == "spread"], [e for e in LOG if e[0] == "chunk"]


async def test_a_batch_handler_gives_the_same_results_for_chunks_and_single_messages(tmp_path: Path) -> None:
    batched, chunks = await _spreads(tmp_path / "a", _batch_services("chunk_feed", count=40, chunk=8))
    assert len(batched) == 40 and [n for _, n in chunks] == [8] * 5  # chunks of 8 over two subjects: each taken whole
    single, ones = await _spreads(tmp_path / "b", _batch_services("single_feed", count=40))
    assert all(n == 1 for _, n in ones) and len(ones) == 40  # single messages reach the batch kernel as chunks of one
    assert sorted(single, key=lambda e: e[4]) == sorted(batched, key=lambda e: e[4])  # the same spreads either way


class SingleFeed(Node[ChunkFeedParams]):
    """The same ticks as :class:`ChunkFeed`, one message at a time."""

    async def run(self) -> None:
        await self.ctx.clock.wait_until(T0)
        for s in range(1, self.params.count + 1):
            await self.ctx.publish("ticks", tick(s, T0 + s, symbol="EURUSD" if s % 3 else "XAUUSD", bid=1.1 + s / 1e4))


REGISTRY.register(_spec("single_feed", SingleFeed, ChunkFeedParams, outputs=["ticks"], role="source"))


class TimedFeedParams(Strict):
    count: int = 12
    chunk: int = 5
    step_ms: int = 1_000


class TimedFeed(Node[TimedFeedParams]):
    """History handed on ahead of time: ticks in timed chunks, each row known at its own ``ts``."""

    async def run(self) -> None:
        from framework.chunk import Chunk

        p = self.params
        rows = [tick(s, T0 + (s - 1) * p.step_ms, bid=1.1 + s / 1e4) for s in range(1, p.count + 1)]
        for i in range(0, len(rows), p.chunk):
            part = rows[i : i + p.chunk]
            await self.ctx.clock.wait_until(part[0]["ts"])
            await self.ctx.publish_batch("ticks", Chunk.from_rows(part), at=[r["ts"] for r in part])
            LOG.append(("published", part[-1]["seq"], self.ctx.clock.now_ms()))


class TimedSpread(Node[Strict]):
    """A batch kernel that passes its rows' times on to what it derives from them."""

    @handles("ticks", batch=True)
    async def on_ticks(self, chunk: Any) -> None:
        from framework.chunk import Chunk

        LOG.append(("chunk", len(chunk), self.ctx.clock.now_ms()))
        spreads = ((chunk["ask"] - chunk["bid"]) * 10_000).round(6)
        derived = Chunk({**{n: chunk[n] for n in chunk.names}, "bid": spreads, "ask": spreads + 1, "source": ["spread"] * len(chunk)})
        await self.ctx.publish_batch("out", derived, at=chunk.times)


class Reacting(Node[Strict]):
    """Records each delivery (its subject) with the clock, and answers each tick at once (its consequence)."""

    @handles("ticks")
    async def on_tick(self, message: dict, origin: str) -> None:
        kind = origin.split(".")[0]
        LOG.append(("got", kind, message["symbol"], message["seq"], message["ts"], self.ctx.clock.now_ms(), self.ctx.service))
        if kind == "ticks" and message["symbol"] == "EURUSD":
            await self.ctx.publish("out", message)


for _s in (
    _spec("timed_feed", TimedFeed, TimedFeedParams, outputs=["ticks"], role="source"),
    _spec("timed_spread", TimedSpread, Strict, inputs=["ticks"], outputs=["out"]),
    _spec("reacting", Reacting, Strict, inputs=["ticks"], outputs=["out"]),
):
    REGISTRY.register(_s)

TIMED = {
    "src": {"node": "timed_feed", "phase": "data", "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
    "other": {"node": "feed", "phase": "data", "params": {"symbol": "XAUUSD", "offset_ms": 500, "step_ms": 700, "count": 16},
              "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
    "spread": {"node": "timed_spread", "phase": "data", "inputs": {"ticks": {"nats": "ticks.EURUSD"}},
               "outputs": {"out": {"nats": "spreads.{symbol}"}}},
    "rec": {"node": "reacting", "phase": "data", "inputs": {"ticks": {"nats": ["ticks.{symbol}", "spreads.{symbol}", "reactions.{symbol}"]}},
            "outputs": {"out": {"nats": "reactions.{symbol}"}}},
    "rec2": {"node": "reacting", "phase": "data", "inputs": {"ticks": {"nats": "ticks.EURUSD"}}, "outputs": {"out": {"nats": "reactions.{symbol}"}}},
}  # fmt: skip


async def _timed(tmp_path: Path, services: dict[str, Any]) -> list[Any]:
    LOG.clear()
    rt = runtime(tmp_path, services, extra={"domains": ["ticks", "spreads", "reactions", "deadletter"]})
    await asyncio.wait_for(rt.run(), TIMEOUT)
    return list(LOG)


async def test_a_timed_chunk_reaches_each_handler_in_event_time_with_batches_computing_ahead(tmp_path: Path) -> None:
    log = await _timed(tmp_path, TIMED)
    chunks = [e for e in log if e[0] == "chunk"]
    assert [n for _, n, _ in chunks] == [5, 5, 2] and [now for *_, now in chunks] == [T0, T0 + 5_000, T0 + 10_000]  # whole, at once
    got = [e[1:] for e in log if e[0] == "got"]
    rec = [g[:-1] for g in got if g[-1] == "rec"]
    assert [sum(1 for g in rec if g[0] == kind) for kind in ("ticks", "spreads", "reactions")] == [12 + 16, 12, 24]
    assert all(now == ts for *_, ts, now, _ in got)  # every row when the clock reads its time, the derived ones too
    times = [ts for *_, ts, _, _ in got]
    assert times == sorted(times)  # in event-time order with the single-message source's ticks
    for seq in range(1, 13):  # at each instant: the row to every subscriber, then their consequences, then what the batch derived
        at = [(g[0], g[-1]) for g in got if g[1:3] == ("EURUSD", seq)]
        assert sorted(at[:2]) == [("ticks", "rec"), ("ticks", "rec2")], (seq, at)
        assert at[2:] == [("reactions", "rec"), ("reactions", "rec"), ("spreads", "rec")], (seq, at)
    published = [e for e in log if e[0] == "published"]
    assert published == [("published", 5, T0 + 4_000), ("published", 10, T0 + 9_000), ("published", 12, T0 + 11_000)]
    for entry in published:  # a source's publication returns once its last row and what it set off are handled
        assert log.index(entry) > max(i for i, e in enumerate(log) if e[0] == "got" and e[2:4] == ("EURUSD", entry[1]))
    assert await _timed(tmp_path / "again", TIMED) == log  # deterministic


class PairsFeed(Node[TimedFeedParams]):
    """History of two pairs, interleaved in time, in timed chunks: each chunk spans both subjects."""

    async def run(self) -> None:
        from framework.chunk import Chunk

        p = self.params
        rows = [tick(s, T0 + (s - 1) * p.step_ms, symbol=("EURUSD", "GBPUSD")[s % 2]) for s in range(1, p.count + 1)]
        for i in range(0, len(rows), p.chunk):
            part = rows[i : i + p.chunk]
            await self.ctx.clock.wait_until(part[0]["ts"])
            await self.ctx.publish_batch("ticks", Chunk.from_rows(part), at=[r["ts"] for r in part])


class SeenChunks(Node[Strict]):
    """A batch handler recording the rows (seq, symbol) of each chunk it takes."""

    @handles("ticks", batch=True)
    async def on_ticks(self, chunk: Any) -> None:
        LOG.append(("chunk", list(zip(chunk["seq"].tolist(), chunk["symbol"].tolist()))))


for _s in (_spec("pairs_feed", PairsFeed, TimedFeedParams, outputs=["ticks"], role="source"),
           _spec("seen_chunks", SeenChunks, Strict, inputs=["ticks"])):  # fmt: skip
    REGISTRY.register(_s)


async def test_a_batch_handler_of_several_subjects_takes_a_publication_as_one_chunk_in_its_order(tmp_path: Path) -> None:
    """A timed chunk of two pairs goes out grouped by subject; a batch handler subscribed to both must still see the
    rows as published (a feature kernel's cross-pair inputs need every pair's bar of an instant), one chunk each time;
    a single-message handler of one pair gets its rows at their times."""
    services = {
        "src": {"node": "pairs_feed", "phase": "data", "params": {"count": 10, "chunk": 4},
                "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
        "batch": {"node": "seen_chunks", "phase": "data", "inputs": {"ticks": {"nats": "ticks.>"}}},
        "one": {"node": "reacting", "phase": "data", "inputs": {"ticks": {"nats": "ticks.GBPUSD"}},
                "outputs": {"out": {"nats": "reactions.{symbol}"}}},
    }  # fmt: skip
    log = await _timed(tmp_path, services)
    chunks = [rows for kind, rows, *_ in (e for e in log if e[0] == "chunk")]
    pair = ("EURUSD", "GBPUSD")
    assert chunks == [[(s, pair[s % 2]) for s in range(first, min(first + 4, 11))] for first in (1, 5, 9)]
    got = [e[1:] for e in log if e[0] == "got"]
    assert [(g[2], g[3] == g[4]) for g in got] == [(s, True) for s in range(1, 11) if s % 2]  # GBPUSD rows, each at its time


async def test_what_a_batch_handler_publishes_without_times_waits_for_the_chunks_last_row(tmp_path: Path) -> None:
    services = {**TIMED, "spread": {**TIMED["spread"], "node": "spread"}}  # the untimed kernel of the tests above
    log = await _timed(tmp_path, services)
    got = [e[1:] for e in log if e[0] == "got"]
    assert all(now == ts for kind, *_, ts, now, _ in got if kind != "spreads")
    spreads = [(ts, now) for kind, *_, ts, now, _ in got if kind == "spreads"]
    assert len(spreads) == 12 and sorted({now for _, now in spreads}) == [T0 + 4_000, T0 + 9_000, T0 + 11_000]  # never before the chunk's last row
    assert all(now >= ts for ts, now in spreads)


async def test_a_timed_chunk_on_the_wall_clock_goes_out_when_its_rows_are_due(tmp_path: Path) -> None:
    LOG.clear()
    rt = runtime(tmp_path, TIMED, extra={"domains": ["ticks", "spreads", "reactions", "deadletter"], "runtime": {"clock": "wall"}})
    await asyncio.wait_for(rt.run(), TIMEOUT)
    got = [e[1:] for e in LOG if e[0] == "got"]
    assert sorted(g[2] for g in got if g[0] == "spreads") == list(range(1, 13))  # history long past: all due at once
    assert [n for _, n, _ in (e for e in LOG if e[0] == "chunk")] == [5, 5, 2]


async def test_a_chunk_is_validated_per_column_and_its_bad_rows_dead_lettered(tmp_path: Path) -> None:
    import json

    got, _ = await _spreads(tmp_path, _batch_services("chunk_feed", count=16, chunk=16, bad=[3, 7]))
    assert len(got) == 14
    letters = [json.loads(line) for line in (tmp_path / "run" / "deadletter" / "src.jsonl").read_text().splitlines()]
    assert sorted(d["payload"]["seq"] for d in letters) == [3, 7]
    assert all("bid" in d["reason"] and "minimum" in d["reason"] for d in letters)


async def test_a_backtest_archives_only_what_a_service_reads_back_and_keeps_the_log_bounded(tmp_path: Path) -> None:
    from framework.transport.inprocess import InProcessLog

    services = {
        "a": {"node": "feed", "phase": "data", "params": {"count": 30},
              "outputs": {"ticks": {"nats": "ticks.{symbol}", "kafka": ["read_back", "nobody"]}}},
        "rec": {"node": "recorder", "phase": "data", "inputs": {"ticks": {"nats": "ticks.{symbol}", "kafka": "read_back", "replay": True}}},
    }  # fmt: skip
    topics = {"read_back": {"partitions": 1, "contract": "tick.v1"}, "nobody": {"partitions": 1, "contract": "tick.v1"}}
    log = InProcessLog(max_records=10)
    rt = runtime(tmp_path, services, extra={"topics": topics, "runtime": {"archive": False}}, log_transport=log)
    await asyncio.wait_for(rt.run(), TIMEOUT)
    assert len([e for e in LOG if e[0] == "tick"]) == 30
    assert set(log._topics) == {"read_back"}  # the unread archive was never even created
    part = log._topics["read_back"].partitions[0]
    assert (part.start, part.end, len(part.records)) == (20, 30, 10)


class Blocking(Node[Strict]):
    """A handler that takes its time (a slow store call)."""

    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        await asyncio.sleep(0.02)


REGISTRY.register(_spec("blocking", Blocking, Strict, inputs=["ticks"], role="sink"))
REGISTRY.register(NodeSpec(name="relay", factory="tests.test_runtime:Relay", params=Strict,
                           inputs={"ticks": Port("tick.v1")}, outputs={"out": Port("tick.v1")}))  # fmt: skip


async def test_a_handlers_latency_leaves_out_the_handlers_that_ran_inside_it(tmp_path: Path) -> None:
    """Live, in-process delivery runs an idle subscriber on its publisher's stack: its time is its own."""
    services = {
        "a": {"node": "feed", "phase": "data", "params": {"count": 5}, "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
        "relay": {"node": "relay", "phase": "data", "inputs": {"ticks": {"nats": "ticks.{symbol}"}}, "outputs": {"out": {"nats": "relayed.{symbol}"}}},
        "slow": {"node": "blocking", "phase": "data", "inputs": {"ticks": {"nats": "relayed.{symbol}"}}},
    }  # fmt: skip
    rt = runtime(tmp_path, services, extra={"domains": ["ticks", "relayed", "deadletter"],
                                            "runtime": {"clock": "wall", "clock_speed": 1000.0, "clock_origin": "2026-11-02T00:00:00Z"}})  # fmt: skip
    await asyncio.wait_for(rt.run(), TIMEOUT)
    m = {s["service"]: s["handler_latency_ms"] for s in rt.metrics()}
    assert m["slow"]["count"] == 5 and m["relay"]["count"] == 5
    assert m["slow"]["total"] >= 5 * 20 * 0.9
    assert m["relay"]["total"] < m["slow"]["total"] / 10  # the relay waited on "slow", but that time is slow's


# --------------------------------------------------------------------------- work off the loop


def pid_and_square(n: int) -> tuple[int, int]:
    import os
    import time as _time

    _time.sleep(0.05)
    if n < 0:
        raise ValueError(f"negative: {n}")
    return os.getpid(), n * n


class OffloadParams(Strict):
    process: bool = True


class Offloading(Node[OffloadParams]):
    """Starts work for every tick and publishes its result when it comes back."""

    async def on_start(self) -> None:
        self.inside = False

    @handles("ticks")
    async def on_tick(self, message: dict) -> None:
        assert not self.inside, "re-entered"
        LOG.append(("tick", message["seq"]))
        n = -1 if message["seq"] == 3 else message["seq"]
        await self.ctx.background(pid_and_square, n, then=self.done, failed=self.failed, process=self.params.process)

    async def done(self, result: tuple[int, int]) -> None:
        assert not self.inside, "re-entered"
        self.inside = True
        pid, square = result
        LOG.append(("done", square, pid != __import__("os").getpid()))
        await self.ctx.publish("out", tick(square, T0))
        self.inside = False

    async def failed(self, exc: Exception) -> None:
        LOG.append(("failed", str(exc)))


class Caused(Node[Strict]):
    @handles("ticks")
    async def on_tick(self, message: dict, origin: str) -> None:
        LOG.append(("out", message["seq"]))


REGISTRY.register(_spec("offloading", Offloading, OffloadParams, inputs=["ticks"], outputs=["out"]))


@pytest.mark.parametrize("clock", ["simulated", "wall"])
async def test_background_work_comes_back_through_the_mailbox_with_its_cause(tmp_path: Path, clock: str) -> None:
    from framework.transport.inprocess import InProcessPubSub

    bus = InProcessPubSub(wire=True)
    await bus.connect()
    causes: dict[int, str | None] = {}
    ids: dict[int, str] = {}

    async def watch(subject: str, payload: dict, headers: Any) -> None:
        if subject.startswith("ticks."):
            ids[payload["seq"]] = headers["fxflow-id"]
        else:
            causes[payload["seq"]] = (headers or {}).get("fxflow-cause")

    await bus.subscribe(">", watch)
    services = {
        "feed": {"node": "feed", "phase": "data", "params": {"count": 4, "step_ms": 1_000}, "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
        "work": {"node": "offloading", "phase": "data", "inputs": {"ticks": {"nats": "ticks.{symbol}"}},
                 "outputs": {"out": {"nats": "squares.{symbol}"}}},
    }  # fmt: skip
    extra: dict[str, Any] = {"domains": ["ticks", "squares", "deadletter"], "runtime": {"clock": clock}}
    if clock == "wall":
        extra["runtime"].update(clock_speed=100.0, clock_origin="2026-11-02T00:00:00Z")
    rt = runtime(tmp_path, services, extra=extra, pubsub=bus)
    await rt.start()
    try:
        await asyncio.wait_for(_until(lambda: len([e for e in LOG if e[0] in ("done", "failed")]) == 4), TIMEOUT)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    done = [e for e in LOG if e[0] == "done"]
    assert sorted(s for _, s, _ in done) == [1, 4, 16] and all(other for *_, other in done)  # in a worker process
    assert ("failed", "negative: -1") in LOG
    assert causes == {1: ids[1], 4: ids[2], 16: ids[4]}  # each result names the tick that started its work
    if clock == "simulated":  # each result right after its tick: the work took its turn, the clock held
        assert [e[0] for e in LOG] == ["tick", "done", "tick", "done", "tick", "failed", "tick", "done"]


async def test_background_work_lets_the_node_go_on_handling_messages_live(tmp_path: Path) -> None:
    services = {
        "feed": {"node": "burst", "phase": "data", "params": {"count": 6}, "outputs": {"ticks": {"nats": "ticks.{symbol}"}}},
        "work": {"node": "offloading", "phase": "data", "params": {"process": False},
                 "inputs": {"ticks": {"nats": "ticks.{symbol}"}}, "outputs": {"out": {"nats": "squares.{symbol}"}}},
    }  # fmt: skip
    rt = runtime(tmp_path, services, extra={"domains": ["ticks", "squares", "deadletter"], "runtime": {"clock": "wall"}})
    await rt.start()
    try:
        await asyncio.wait_for(_until(lambda: len([e for e in LOG if e[0] in ("done", "failed")]) == 6), TIMEOUT)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    kinds = [e[0] for e in LOG if e[0] in ("tick", "done", "failed")]
    assert kinds[:6] == ["tick"] * 6  # every tick handled while the first work (50 ms) still ran
