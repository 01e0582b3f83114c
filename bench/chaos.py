"""Chaos run of the data foundation on real servers: nothing acknowledged is lost, nothing is written twice.

    .venv/bin/python bench/chaos.py                      # 90 s of ticks, 8 kills
    .venv/bin/python bench/chaos.py --seconds 40 --kills 4 --seed 3

Starts nats-server, tansu (Kafka protocol), PostgreSQL and Redis on free ports, then three
``fxrun topology=live`` processes, one service each: polygon-live-collector (against its
local simulator, quotes every ``--interval`` ms per pair), data-bridge and tick-aggregator.
While ticks flow it SIGKILLs, at random moments chosen by ``--seed``, the collector, the
bridge or nats-server, and starts each again after a random pause. Then it stops the
collector, lets the others finish, stops them, and checks with independent clients
(aiokafka, asyncpg, chdb) that

- ``tick_archive`` (Kafka), ``live_ticks`` (PostgreSQL) and ``historical_ticks``
  (ClickHouse, read with ``FINAL`` as a ReplacingMergeTree is read) hold the same set of
  ticks (symbol, ts, seq), none twice, and no (symbol, seq) was issued twice;
- every bar the aggregator published (its latest revision, in its tables and in the bridge's
  archive) equals the batch aggregation of the archived ticks of its bucket, and every
  minute that ended before the last tick has its 1-minute bar.

It prints the counts, the kills, and how long each restarted bridge took from its start to
the end of its catch-up replay; exits 1 on any mismatch. ``tests/test_chaos.py`` runs it at
a small size in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.infra import KafkaServer, NatsServer, PostgresServer, RedisServer  # noqa: E402

TIMEFRAMES = ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]
SERVICES = ("polygon-live-collector", "data-bridge", "tick-aggregator")
VICTIMS = ["polygon-live-collector", "data-bridge", "nats-server"]
ALIGN_AT = 48.0
"""Second of the minute the services start at."""
FEED_START = "2026-11-02T17:00:00Z"
"""The synthetic feed's first quote: an open hour (Monday), whatever the day of the run."""
CATCH_UP = re.compile(r"^(\S+ \S+) .*replayed (\d+) archived tick\(s\).* for catch-up after a restart")
STARTED = re.compile(r"^(\S+ \S+) .*service data-bridge started")


@dataclass
class Service:
    name: str
    data_dir: Path
    command: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)
    log_offset: int = 0
    """The size of the log when the latest process started: what it writes comes after."""
    down: bool = False
    """Killed on purpose: the supervisor leaves it alone until the chaos loop starts it again."""

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.starts.append(time.time())
        self.down = False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.down = True

    def exited(self) -> int | None:
        """The exit code if the process ended on its own (a supervisor restarts it then)."""
        return None if self.proc is None or self.down else self.proc.poll()

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def wait_started(svc: Service, run: Path, timeout: float = 180) -> None:
    """Until ``svc``'s log says its latest process started its service; one that died or never started is the run's end.

    Only the latest process's part of the log counts: an earlier start that exited before starting its service (NATS
    was down, and the supervisor started it again) has no "started" line."""
    deadline = time.time() + timeout
    needle = f"service {svc.name} started"
    while time.time() < deadline:
        if svc.proc is not None and svc.proc.poll() is not None:
            raise SystemExit(f"{svc.name} exited with {svc.proc.returncode} while starting; see the logs under {run}")
        if svc.log.exists() and needle in _read_from(svc.log, svc.log_offset):
            return
        time.sleep(0.2)
    raise SystemExit(f"{svc.name} did not start within {timeout:.0f}s; see the logs under {run}")


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def service(name: str, work: Path, env: dict[str, str], pairs: list[str], interval_ms: int, seed: int) -> Service:
    data_dir = work / name
    command = [
        sys.executable, "-m", "framework.cli", "topology=live", f"data_dir={data_dir}", f"only=[{name}]",
        f"pairs=[{','.join(pairs)}]", "simulate_feeds=true", "topology.nats.auth=null", "topology.runtime.metrics_port=null",
        # an open hour's quotes replayed at real pace, stamped live: a feed from now is silent over the FX weekend
        f"+topology.services.polygon-live-collector.params.simulation={{seed: {seed}, start: '{FEED_START}', duration: null, "
        f"mean_interval_ms: {interval_ms}, pace: realtime}}",
        "++topology.runtime.batch_interval=500ms",
    ]  # fmt: skip
    return Service(name, data_dir, command, env)


def chdb_query(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    """Rows of ``sql`` on a stopped service's embedded ClickHouse (one chdb per process: a subprocess each)."""
    code = (
        "import clickhouse_connect, json, sys\n"
        f"c = clickhouse_connect.get_client(dsn='chdb://{data_dir / 'clickhouse'}')\n"
        "r = c.query(sys.argv[1])\n"
        "print(json.dumps([dict(zip(r.column_names, row)) for row in r.result_rows]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, sql], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


async def archived_ticks(bootstrap: str) -> list[tuple[str, int, int]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        "tick_archive", bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )  # no group: every partition, from the beginning
    await consumer.start()
    try:
        out: list[tuple[str, int, int]] = []
        quiet = 0
        while quiet < 10:
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            records = [m for ms in batch.values() for m in ms]
            quiet = 0 if records else quiet + 1
            for m in records:
                v = json.loads(m.value)
                out.append((v["symbol"], v["ts"], v["seq"]))
        return out
    finally:
        await consumer.stop()


async def live_ticks(url: str) -> list[tuple[str, int, int]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch("SELECT symbol, ts, seq FROM live_ticks")]
    finally:
        await conn.close()


def compare_ticks(name: str, got: list[tuple[str, int, int]], archive: set[tuple[str, int, int]]) -> list[str]:
    problems = []
    twice = [k for k, n in Counter(got).items() if n > 1]
    if twice:
        problems.append(f"{name}: {len(twice)} tick(s) twice, e.g. {twice[:3]}")
    have = set(got)
    if have - archive:
        problems.append(f"{name}: {len(have - archive)} tick(s) not in tick_archive, e.g. {sorted(have - archive)[:3]}")
    if archive - have:
        problems.append(f"{name}: {len(archive - have)} archived tick(s) missing, e.g. {sorted(archive - have)[:3]}")
    return problems


def check_bars(name: str, bars: list[dict[str, Any]], expected: Any, first_ts: int, last_ts: int) -> tuple[list[str], int]:
    """Each bar against the batch aggregation; every minute wholly inside the run has its 1m bar."""
    import pandas as pd

    problems = []
    got = pd.DataFrame(bars)
    if got.empty:
        return [f"{name}: no bars"], 0
    got = got.set_index(["symbol", "timeframe", "ts"])
    unknown = got.index.difference(expected.index)
    if len(unknown):
        problems.append(f"{name}: {len(unknown)} bar(s) for buckets without archived ticks, e.g. {list(unknown[:3])}")
    common = got.index.intersection(expected.index)
    for column in ("open", "high", "low", "close", "tick_count"):
        wrong = (got.loc[common, column] != expected.loc[common, column])
        if wrong.any():
            keys = list(common[wrong.to_numpy()][:3])
            problems.append(f"{name}: {int(wrong.sum())} bar(s) with a wrong {column}, e.g. {keys}")
    minutes = expected.xs("1m", level="timeframe")
    starts = minutes.index.get_level_values("ts")
    due = minutes[(starts >= first_ts) & (starts + 60_000 + 5_000 <= last_ts)].index
    have = got.xs("1m", level="timeframe").index
    missing = due.difference(have)
    if len(missing):
        problems.append(f"{name}: {len(missing)} finished minute(s) without a 1m bar, e.g. {list(missing[:3])}")
    return problems, int((got["revision"] > 0).sum())


def catch_up_times(bridge: Service) -> list[tuple[float, float]]:
    """Per restart of the bridge: seconds from its process start, and from its service start (imports,
    connections and table checks done), to the end of its catch-up replay (from its log)."""

    def stamp(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()

    lines = bridge.log.read_text(errors="replace").splitlines()
    ends = [stamp(m.group(1)) for line in lines if (m := CATCH_UP.match(line))]
    started = [stamp(m.group(1)) for line in lines if (m := STARTED.match(line))]
    out = []
    for start in bridge.starts[1:]:
        done = [e for e in ends if e >= start]
        ready = [s for s in started if s >= start]
        if done and ready and ready[0] <= done[0]:
            out.append((done[0] - start, done[0] - ready[0]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90, help="how long ticks flow")
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs while they flow")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pairs", default="EURUSD,XAUUSD,USDJPY")
    parser.add_argument("--interval", type=int, default=150, help="mean ms between quotes of a pair")
    parser.add_argument("--keep", type=Path, help="keep the run's data and logs here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    pairs = args.pairs.split(",")
    work = args.keep or Path(tempfile.mkdtemp(prefix="fxflow-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    servers = work / "servers"
    nats = NatsServer(servers / "nats").start()
    kafka = KafkaServer(servers / "kafka").start()
    postgres = PostgresServer(servers / "postgres").start()
    redis = RedisServer(servers / "redis").start()
    bootstrap = kafka.url.removeprefix("kafka://")
    env = dict(
        os.environ,
        FXFLOW_NATS_URL=nats.url, FXFLOW_KAFKA_BOOTSTRAP=bootstrap, FXFLOW_POSTGRES_URL=postgres.url,
        FXFLOW_REDIS_URL=redis.url, PYTHONUNBUFFERED="1",
    )  # fmt: skip
    run = work / "services"
    services = {name: service(name, run, env, pairs, args.interval, args.seed) for name in SERVICES}
    events: list[str] = []
    try:
        # the consumers first, each until it says it started (a loaded machine takes tens of seconds); then the
        # source a few seconds before a minute begins: a live aggregator publishes the bars of buckets that began
        # after it started, so the first whole minute is not lost to the start-up, and no kill lands in a start-up
        for name in ("tick-aggregator", "data-bridge"):
            services[name].start()
        for name in ("tick-aggregator", "data-bridge"):
            wait_started(services[name], run)
        time.sleep((ALIGN_AT - time.time() % 60) % 60)
        services["polygon-live-collector"].start()
        wait_started(services["polygon-live-collector"], run)
        t0 = time.time()
        moments = sorted(rng.uniform(8, args.seconds - 5) for _ in range(args.kills))
        def supervise(until: float) -> None:
            """Sleep until ``until``, restarting a service that exited on its own (restart: unless-stopped)."""
            while (left := until - time.time()) > 0:
                time.sleep(min(left, 0.5))
                for svc in services.values():
                    code = svc.exited()
                    if code is not None:
                        events.append(f"{time.time() - t0:5.1f}s {svc.name} exited with {code}; restarted")
                        svc.start()

        victims = [v for _ in range(args.kills // 3 + 1) for v in rng.sample(VICTIMS, len(VICTIMS))]  # each of them, in turn
        for at, victim in zip(moments, victims):
            supervise(t0 + at)
            pause = rng.uniform(0.3, 4.0)
            events.append(f"{time.time() - t0:5.1f}s kill {victim} for {pause:.1f}s")
            if victim == "nats-server":
                nats.kill()
                supervise(time.time() + pause)
                nats.start()
            else:
                services[victim].kill()
                supervise(time.time() + pause)
                services[victim].start()
        supervise(t0 + args.seconds)
        for svc in services.values():  # a process restarted late may still be starting (SIGTERM then is a crash)
            wait_started(svc, run)
        codes = {"polygon-live-collector": services["polygon-live-collector"].stop()}
        time.sleep(8)  # the bridge and the aggregator finish their replays and flush
        for name in ("data-bridge", "tick-aggregator"):
            codes[name] = services[name].stop()

        archive_list = asyncio.run(archived_ticks(bootstrap))
        archive = set(archive_list)
        problems = [f"{name} exited with {code}" for name, code in codes.items() if code != 0]
        if len(archive) != len(archive_list):
            problems.append(f"tick_archive: {len(archive_list) - len(archive)} record(s) twice")
        seqs = Counter((s, q) for s, _, q in archive)
        reused = [k for k, n in seqs.items() if n > 1]
        if reused:
            problems.append(f"tick_archive: {len(reused)} (symbol, seq) issued twice, e.g. {reused[:3]}")
        pg = asyncio.run(live_ticks(postgres.url))
        problems += compare_ticks("live_ticks", pg, archive)
        bridge_dir = services["data-bridge"].data_dir
        hist = [(r["symbol"], r["ts"], r["seq"]) for r in chdb_query(bridge_dir, "SELECT symbol, ts, seq FROM historical_ticks FINAL")]
        problems += compare_ticks("historical_ticks", hist, archive)

        import pandas as pd

        from nodes.marketdata.bars import aggregate_frame

        ticks = pd.DataFrame(
            chdb_query(bridge_dir, "SELECT symbol, ts, bid, ask, seq FROM historical_ticks FINAL ORDER BY symbol, ts, seq")
        )
        expected = aggregate_frame(ticks, TIMEFRAMES).set_index(["symbol", "timeframe", "ts"])
        first_ts, last_ts = int(ticks["ts"].min()), int(ticks["ts"].max())
        columns = "symbol, timeframe, ts, open, high, low, close, tick_count, revision"
        checked = revised = 0
        for name, data_dir, table in (
            ("tick-aggregator historical_aggregates", services["tick-aggregator"].data_dir, "historical_aggregates"),
            ("tick-aggregator live_aggregates", services["tick-aggregator"].data_dir, "live_aggregates"),
            ("data-bridge historical_aggregates", bridge_dir, "historical_aggregates"),
        ):
            bars = chdb_query(data_dir, f"SELECT {columns} FROM {table} FINAL WHERE source = 'aggregator'")
            found, revisions = check_bars(name, bars, expected, first_ts, last_ts)
            problems += found
            checked += len(bars)
            revised = max(revised, revisions)
        catch_up = catch_up_times(services["data-bridge"])
    finally:
        for svc in services.values():
            if svc.proc is not None and svc.proc.poll() is None:
                svc.proc.kill()
        for server in (nats, kafka, postgres, redis):
            server.stop()

    print(f"chaos run: {args.seconds:.0f}s of ticks for {len(pairs)} pairs, seed {args.seed}, data in {work}")
    for event in events:
        print(f"  {event}")
    print(
        f"ticks: tick_archive {len(archive_list)}, live_ticks {len(pg)}, historical_ticks {len(hist)} "
        f"(distinct: {len(archive)}, {len(set(pg))}, {len(set(hist))})"
    )
    print(f"bars checked: {checked} (at their latest revision; {revised} revised bar(s) in the aggregator's table)")
    if catch_up:
        print(
            "bridge catch-up after a restart, replay done: "
            + ", ".join(f"{whole:.1f}s after the process start ({after:.1f}s after the service start)" for whole, after in catch_up)
        )
    for problem in problems:
        print(f"PROBLEM {problem}")
    print("verdict: " + ("nothing lost, nothing twice, every bar right" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
