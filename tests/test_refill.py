"""A table written from an archived port is refilled from the archive after a SIGKILL.

polygon-live-collector runs in its own process (demo profile: in-process log persisted under
data_dir, live_ticks in the embedded ClickHouse) against its simulator at real pace, and is
SIGKILLed while its table writer still holds rows. The next run of the same data_dir writes
them from the archive: live_ticks then holds exactly the archived ticks, none twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import clickhouse_connect
import pytest

from framework.transport.inprocess import InProcessLog

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "polygon-live-collector"


def collector(data_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "framework.cli", "topology=demo", f"data_dir={data_dir}", f"only=[{SERVICE}]",
        "pairs=[EURUSD,XAUUSD]", "topology.runtime.clock=wall", "++topology.runtime.batch_interval=3s",
        # an open hour replayed at real pace, stamped live (a feed from now is silent over the FX weekend and on holidays)
        f"topology.services.{SERVICE}.params.simulation.start=2026-11-02T17:00:00Z",
        f"topology.services.{SERVICE}.params.simulation.duration=null",
        f"++topology.services.{SERVICE}.params.simulation.mean_interval_ms=40",
        *extra,
    ]  # fmt: skip


async def archived(data_dir: Path) -> list[tuple[str, int, int]]:
    log = InProcessLog(data_dir / "log")
    await log.connect()
    try:
        return [(r.value["symbol"], r.value["ts"], r.value["seq"]) async for batch in log.read(["tick_archive"], 0) for r in batch]
    finally:
        await log.close()


def table(data_dir: Path, final: bool) -> list[tuple[str, int, int]]:
    client = clickhouse_connect.get_client(dsn=f"chdb://{data_dir}/clickhouse")
    try:
        rows = client.query(f"SELECT symbol, ts, seq FROM live_ticks {'FINAL' if final else ''}").result_rows
    finally:
        client.close()
    return [tuple(r) for r in rows]


Tick = tuple[str, int, int]


def killed_run(data_dir: Path, log: Path, after_s: float, env: dict[str, str]) -> tuple[list[Tick], set[Tick]]:
    """The collector run, SIGKILLed ``after_s`` after its first ticks are archived: what the archive and the table hold."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(collector(data_dir), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (data_dir / "services" / SERVICE / "watermarks.json").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        while not asyncio.run(archived(data_dir)) and time.monotonic() < deadline:  # the first ticks are archived
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
        time.sleep(after_s)  # ticks flow; the table writer flushes every 3 s, so it holds rows now
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = asyncio.run(archived(data_dir))
    assert before, log.read_text()[-2000:]
    return before, set(table(data_dir, final=False))


@pytest.mark.parametrize("after_s", [4.0, 0.5], ids=["later", "before-the-first-watermark"])
def test_rows_a_killed_writer_held_are_refilled_from_the_archive(tmp_path: Path, after_s: float) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for attempt in range(3):  # a kill just after a flush, before the next tick, leaves nothing to refill (rare): no proof
        data_dir = tmp_path / f"run{attempt}"
        before, in_table = killed_run(data_dir, tmp_path / f"first{attempt}.log", after_s, env)
        if set(before) - in_table:
            break
    else:
        raise AssertionError("the kill left nothing unwritten, three times: the test proves nothing")

    result = subprocess.run(collector(data_dir, "duration=2s"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "written again (refill after a crash)" in result.stderr
    after = asyncio.run(archived(data_dir))
    rows = table(data_dir, final=True)
    assert len(rows) == len(set(rows))  # none twice
    assert set(rows) == set(after) and set(before) <= set(rows)  # every archived tick, the killed run's included
