"""backtesting-engine in service mode (nodes/backtest/runner.py): backtests on request, each a child `fxrun topology=backtest`.

The parent is the demo profile's backtesting-engine alone, on a wall clock (requests are answered while children run), its
store seeded with the seeded bars of tests/test_backtest.py. A request runs the reference strategy
(nodes/backtest/reference.py) on them in a child process, whose trades equal `fxrun backtest run`'s on the same bars; the
statuses arrive in order; the results land in the parent's store. Bad requests are refused with the reason; a child
killed with SIGKILL is a failed run and the next request runs; a child still running at stop is recorded as failed; on
simulated time the request's child runs to its end before the run goes on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from framework.testing import load, make_runtime, query, recording_bus
from nodes.backtest import reference
from nodes.backtest import tape as tapes
from nodes.backtest.runner import expired_runs

ROOT = Path(__file__).resolve().parents[1]
ENGINE = "backtesting-engine"
SUBJECT = f"control.{ENGINE}"
END = 1793599200000  # Monday 2026-11-02T06:00Z, as tests/test_backtest.py
BARS, SEED = 2400, 16
START = tapes.start_for(BARS, END)
REFERENCE = [o for o in reference.overrides("-", "-", seed=SEED) if ENGINE not in o and not o.startswith("pairs=")]
"""The reference strategy's settings of the child's services (the window and the bars are the runner's)."""
TRADES = "SELECT symbol, side, open_ts, ts, volume, entry_price, exit_price, pnl, commission FROM trade_analysis FINAL ORDER BY open_ts, symbol"


def iso(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


class Parent:
    """backtesting-engine (backtest_runner) alone in a runtime of its own, its store holding ``bars``."""

    def __init__(self, data_dir: Path, bars: int = BARS, clock: str = "wall", *overrides: str) -> None:
        self.data_dir, self.bars, self.clock, self.overrides = data_dir, bars, clock, overrides

    async def __aenter__(self) -> Parent:
        self.bus, self.statuses = await recording_bus("backtest.>")
        loaded = load(self.data_dir, "pairs=[EURUSD]", f"topology.runtime.clock={self.clock}", f"~topology.services.{ENGINE}.params.child",
                      f"~topology.services.{ENGINE}.params.on_promotion", f"++topology.services.{ENGINE}.params.status_every=100ms",
                      *self.overrides)  # fmt: skip
        self.rt = make_runtime(loaded, self.data_dir, pubsub=self.bus, only=[ENGINE])
        await self.rt.start()
        if self.bars:
            tape = tapes.synthetic(["EURUSD"], ["1m"], tapes.start_for(self.bars, END), END, SEED)
            await self.rt.stores["clickhouse"].insert("historical_aggregates", tape.messages())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.rt.stop()

    @property
    def node(self) -> Any:
        return self.rt.hosts[ENGINE].node

    async def ask(self, **request: Any) -> dict[str, Any]:
        return await self.bus.request(SUBJECT, {"ts": 1_793_600_000_000, **request}, None, 60)

    def of(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(s, m) for s, m in self.statuses if m.get("run_id") == run_id]

    async def until(self, run_id: str, *kinds: str, timeout: float = 60) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            found = [m for _, m in self.of(run_id) if m["status"] in kinds]
            if found:
                return found[-1]
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {'/'.join(kinds)} status of {run_id} in {timeout}s: {self.of(run_id)}")


def reference_request(**extra: Any) -> dict[str, Any]:
    return {"start": START, "end": END, "symbols": ["EURUSD"], "timeframes": ["1m"], "overrides": REFERENCE, **extra}


def child(parent: Path, run_id: str) -> Path:
    return parent / "services" / ENGINE / "runs" / run_id


async def test_a_request_runs_the_backtest_fxrun_backtest_run_runs(tmp_path: Path) -> None:
    async with Parent(tmp_path / "parent") as p:
        reply = await p.ask(**reference_request(reason="a person asked"))
        assert reply["accepted"] is True and reply["state"] == "running", reply
        run_id = reply["run_id"]
        done = await p.until(run_id, "completed", "failed")
        again = await p.ask(**reference_request(reason="a person asked"))  # the same request: one run
    assert done["status"] == "completed", done
    assert again == {**again, "accepted": True, "run_id": run_id, "state": "done"}

    # the statuses, in order, on backtest.{status}.<run_id>
    subjects = [s for s, _ in p.of(run_id)]
    kinds = [m["status"] for _, m in p.of(run_id)]
    assert subjects == [f"backtest.{k}.{run_id}" for k in kinds]
    assert kinds[0] == "started" and kinds[-1] == "completed" and set(kinds[1:-1]) == {"progress"} and len(kinds) >= 7, kinds
    progress = [m["progress"] for _, m in p.of(run_id)[1:]]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert done["metrics"]["bars"] == BARS and done["metrics"]["trades"] > 40

    # the same bars through `fxrun backtest run` (seeded bars made in that process): the same round trips
    mine = child(tmp_path / "parent", run_id)
    ref_dir = tmp_path / "fxrun-backtest-run"
    ran = subprocess.run([sys.executable, "-m", "framework.cli", "backtest", "run", *reference.overrides(iso(START), iso(END), seed=SEED),
                          f"data_dir={ref_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    ours, theirs = await query(mine, TRADES), await query(ref_dir, TRADES)
    assert len(ours) > 40 and ours == theirs
    assert await query(mine, "SELECT count() AS n FROM executions FINAL") == await query(ref_dir, "SELECT count() AS n FROM executions FINAL")

    # the results, in the parent's store: one row per metric of the child's result.json, with its config hash and the request
    result = orjson.loads((mine / "backtests" / run_id / "result.json").read_bytes())
    rows = await query(tmp_path / "parent", "SELECT run_id, metric, value, details FROM backtest_results ORDER BY metric")
    assert {r["run_id"] for r in rows} == {run_id}
    assert {r["metric"]: r["value"] for r in rows} == {k: v for k, v in result["metrics"].items() if v is not None}
    details = orjson.loads(rows[0]["details"])
    assert details["config_hash"] == result["details"]["config_hash"] and len(details["config_hash"]) == 64
    assert details["params"]["source"] == "file" and details["request"]["reason"] == "a person asked"
    recorded = await query(tmp_path / "parent", "SELECT status FROM backtest_runs ORDER BY ts, status")
    assert sorted(r["status"] for r in recorded) == sorted(kinds)


async def test_bad_requests_are_refused_with_the_reason(tmp_path: Path) -> None:
    async with Parent(tmp_path / "parent") as p:
        asked = {
            "unknown symbol EURXXX": await p.ask(**reference_request(symbols=["EURXXX"])),
            "empty window": await p.ask(**reference_request(start=END, end=START)),
            "no bars of EURUSD 1m between": await p.ask(**reference_request(start=END + 86_400_000, end=END + 2 * 86_400_000)),
            "timeframe 2h is not one of the topology's": await p.ask(**reference_request(timeframes=["2h"])),
            "Could not override 'topology.services.risk-managment.enabled'": await p.ask(
                **reference_request(overrides=["topology.services.risk-managment.enabled=false"])),
            "FX102 risk-management": await p.ask(**reference_request(overrides=["++topology.services.risk-management.params.risk_per_trade=-1"])),
            "artifact nope:3": await p.ask(**reference_request(models={"nope": {"timeframe": "1m", "artifact": "nope:3"}})),
            "give start and end, or lookback": await p.ask(**reference_request(lookback="2h")),
            "start: Input should be": await p.ask(**reference_request(start="yesterday")),
            "its own bus, log and stores": await p.ask(**reference_request(overrides=["topology.runtime.pubsub=nats"])),
            "would trade with broker 'mt5linux'": await p.ask(**reference_request(overrides=["topology.services.mt5-connector.params.broker=mt5linux"])),
            "the runner sets start": await p.ask(**reference_request(overrides=[f"topology.services.{ENGINE}.params.start=2020-01-01"])),
        }
        await asyncio.sleep(0.3)
    for says, reply in asked.items():
        assert reply["accepted"] is False and says in reply["reason"] and "\n" not in reply["reason"], (says, reply)
    assert asked["FX102 risk-management"]["reason"].startswith("the child run would not start: ERROR FX102")  # what the child's lint says
    assert p.statuses == [] and not (tmp_path / "parent" / "services" / ENGINE / "runs").exists()


async def test_a_killed_child_fails_and_the_service_runs_the_next_request(tmp_path: Path) -> None:
    async with Parent(tmp_path / "parent", 20_000) as p:
        first = await p.ask(**reference_request(start=tapes.start_for(20_000, END)))
        run_id = first["run_id"]
        await p.until(run_id, "started")  # the replay has begun: the child is mid-run
        proc = p.node.children.procs[run_id]
        os.kill(proc.pid, signal.SIGKILL)
        failed = await p.until(run_id, "failed", "completed")
        second = await p.ask(**reference_request())
        done = await p.until(second["run_id"], "completed", "failed")
    assert failed["status"] == "failed" and "killed by SIGKILL" in failed["message"], failed
    assert second["accepted"] and second["state"] == "running" and done["status"] == "completed", (second, done)
    runs = await query(tmp_path / "parent", "SELECT run_id, status, message FROM backtest_runs WHERE status IN ('failed', 'completed')")
    assert {(r["run_id"], r["status"]) for r in runs} == {(run_id, "failed"), (second["run_id"], "completed")}
    assert await query(tmp_path / "parent", "SELECT DISTINCT run_id FROM backtest_results") == [{"run_id": second["run_id"]}]


async def test_a_child_running_at_stop_is_killed_and_recorded_as_failed(tmp_path: Path) -> None:
    async with Parent(tmp_path / "parent", 20_000) as p:
        reply = await p.ask(**reference_request(start=tapes.start_for(20_000, END)))
        await p.until(reply["run_id"], "started")
        proc = p.node.children.procs[reply["run_id"]]
    assert proc.wait(timeout=10) == -signal.SIGKILL
    kinds = [m["status"] for _, m in p.of(reply["run_id"])]
    assert kinds[0] == "started" and kinds[-1] == "failed" and "stopped with the service" in p.of(reply["run_id"])[-1][1]["message"]


async def test_on_simulated_time_the_child_runs_to_its_end_within_the_request(tmp_path: Path) -> None:
    async with Parent(tmp_path / "parent", BARS, "simulated") as p:
        reply = await p.ask(**reference_request())
        kinds = [m["status"] for _, m in p.of(reply["run_id"])]  # all there when the reply is: the clock was held meanwhile
    assert reply["accepted"] and reply["state"] == "done" and kinds[0] == "started" and kinds[-1] == "completed", (reply, kinds)
    assert len({m["ts"] for _, m in p.of(reply["run_id"])}) == 1  # no simulated time passed


def _old_run(folder: Path, age_s: float) -> Path:
    """A finished run's directory, last changed ``age_s`` ago (wall time)."""
    (folder / "backtests").mkdir(parents=True)
    (folder / "fxrun.out").write_text("done\n")
    then = time.time() - age_s
    for path in (folder / "backtests", folder / "fxrun.out", folder):
        os.utime(path, (then, then))
    return folder


def test_retention_picks_finished_runs_beyond_the_newest_n_or_too_old_never_a_busy_one(tmp_path: Path) -> None:
    hour, day = 3600, 86_400
    for name, age in {"bt-a": 5 * day, "bt-b": 3 * hour, "bt-c": 2 * hour, "bt-d": hour, "bt-busy": 9 * day, "pending": 9 * day}.items():
        _old_run(tmp_path / name, age)
    (tmp_path / "notes.txt").write_text("not a run")
    _old_run(tmp_path / ".removing-bt-z", 9 * day)  # a removal cut short: not a run either
    runs = {p.name: p for p in tmp_path.iterdir()}
    now = time.time()
    assert expired_runs(tmp_path, 2, 2 * day, now, {"bt-busy"}) == [runs["bt-b"], runs["bt-a"]]
    assert expired_runs(tmp_path, None, 2 * day, now, {"bt-busy"}) == [runs["bt-a"]]
    assert expired_runs(tmp_path, 3, None, now, set()) == [runs["bt-a"], runs["bt-busy"]]
    assert expired_runs(tmp_path, None, None, now, set()) == [] and expired_runs(tmp_path / "none", 1, 1, now, set()) == []


async def test_old_run_directories_are_removed_at_start_and_after_each_run(tmp_path: Path) -> None:
    runs = tmp_path / "parent" / "services" / ENGINE / "runs"
    _old_run(runs / "bt-old", 3 * 86_400)  # older than max_age: removed at start
    _old_run(runs / "bt-x", 7200)
    _old_run(runs / "bt-y", 3600)
    _old_run(runs / ".removing-bt-w", 60)  # a removal a killed service cut short: finished at start
    async with Parent(tmp_path / "parent", BARS, "simulated", f"++topology.services.{ENGINE}.params.retention={{keep: 2, max_age: 1d}}") as p:
        assert sorted(d.name for d in runs.iterdir()) == ["bt-x", "bt-y"]
        reply = await p.ask(**reference_request())
        assert reply["state"] == "done", reply
        kept = sorted(d.name for d in runs.iterdir())  # the two newest finished runs: this one and bt-y
        again = await p.ask(**reference_request())
    assert kept == sorted([reply["run_id"], "bt-y"]) and again["state"] == "done"
    assert (runs / reply["run_id"] / "backtests" / reply["run_id"] / "result.json").is_file()
    assert await query(tmp_path / "parent", "SELECT DISTINCT run_id FROM backtest_results") == [{"run_id": reply["run_id"]}]


class NatsParent(Parent):
    """The same parent, its bus a connection to a real nats-server: what `fxrun backtest request` reaches."""

    def __init__(self, data_dir: Path, url: str) -> None:
        super().__init__(data_dir)
        self.url = url

    async def __aenter__(self) -> Parent:
        self.bus, self.statuses = await recording_bus("backtest.>", nats=self.url)
        loaded = load(self.data_dir, "pairs=[EURUSD]", "topology.runtime.clock=wall", f"~topology.services.{ENGINE}.params.child",
                      f"~topology.services.{ENGINE}.params.on_promotion")  # fmt: skip
        self.rt = make_runtime(loaded, self.data_dir, pubsub=self.bus, only=[ENGINE])
        await self.rt.start()
        tape = tapes.synthetic(["EURUSD"], ["1m"], tapes.start_for(self.bars, END), END, SEED)
        await self.rt.stores["clickhouse"].insert("historical_aggregates", tape.messages())
        return self


async def test_fxrun_backtest_request_asks_a_running_engine_over_nats(tmp_path: Path, nats_server: Any) -> None:
    env = {**os.environ, "FXFLOW_NATS_URL": nats_server.url, "NATS_USER": "fxflow", "NATS_PASSWORD": "unused"}

    async def fxrun(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "framework.cli", "backtest", "request", *args, "topology.nats.auth=null",
                                                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode or 0, out.decode(), err.decode()

    async with NatsParent(tmp_path / "parent", nats_server.url) as p:
        code, out, err = await fxrun("--start", iso(START), "--end", iso(END), "--symbol", "EURUSD", "--timeframe", "1m",
                                     *(f"--set={o}" for o in REFERENCE), "--reason", "asked from the shell", "--json")  # fmt: skip
        assert code == 0, err
        reply = orjson.loads(out)
        assert reply["accepted"] is True, reply
        done = await p.until(reply["run_id"], "completed", "failed")
        assert done["status"] == "completed" and done["metrics"]["trades"] > 40, done
        code, out, err = await fxrun("--start", iso(END), "--end", iso(END + 3_600_000), "--symbol", "EURUSD")  # nothing stored then
        assert code == 1 and out.startswith("backtesting-engine: refused: ") and "Traceback" not in err, (out, err)
        code, out, err = await fxrun("--lookback", "2h", "--model", "broken={")
        assert code != 0 and "--model broken={: not NAME=JSON" in err and "Traceback" not in err, err
    code, out, err = await fxrun("--lookback", "2h", "--timeout", "1")  # the engine stopped: nobody answers
    assert code == 1 and "no backtesting engine answered on control.backtesting-engine" in err, err
    code, out, err = await fxrun("--lookback", "2h", "--timeout", "0")
    assert code == 1 and "--timeout 0.0: a positive number of seconds" in err and "Traceback" not in err, err
