"""``fxrun backtest run | sweep | show`` (nodes/backtest/command.py): each run in a data directory of its own."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from nodes.backtest import command, reference

ROOT = Path(__file__).resolve().parents[1]
END = 1793397600000  # Friday 2026-10-30T22:00Z


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


SMALL = reference.overrides(iso(END - 400 * 60_000), iso(END), report=False)


def test_run_prints_the_result_and_the_same_configuration_is_not_run_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    assert command.main(["run", *SMALL]) == 0
    out = capsys.readouterr().out
    runs = list((tmp_path / ".fxrun-backtests").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("bt-")
    assert f"backtest {runs[0].name}" in out and "trades" in out and "total_return" in out
    result = orjson.loads(next(runs[0].glob("backtests/*/result.json")).read_bytes())
    assert result["run_id"] == runs[0].name  # the run id and the directory both come from the configuration hash

    assert command.main(["run", *SMALL]) == 0  # the same configuration: its result, not a second run
    again = capsys.readouterr().out
    assert "ran before" in again and f"backtest {runs[0].name}" in again
    assert len(list((tmp_path / ".fxrun-backtests").iterdir())) == 1
    assert command.main(["show", str(runs[0])]) == 0 and "total_return" in capsys.readouterr().out
    assert command.main(["show", str(tmp_path / "nothing")]) == 1


def test_a_sweep_runs_each_combination_in_its_own_process_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "sweep"
    code = command.main(["sweep", "--param", "++topology.services.backtesting-engine.params.seed=7,8", "--jobs", "2", "--out", str(out),
                         *SMALL])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = orjson.loads((out / "sweep.json").read_bytes())
    assert [r["overrides"] for r in rows] == [["++topology.services.backtesting-engine.params.seed=7"],
                                              ["++topology.services.backtesting-engine.params.seed=8"]]  # fmt: skip
    assert all(r["exit"] == 0 and r["metrics"]["bars"] == 400 for r in rows)
    assert rows[0]["run_id"] != rows[1]["run_id"] and rows[0]["details"]["params"]["seed"] == 7
    assert (out / "000" / "backtests").is_dir() and (out / "001" / "backtests").is_dir()
    assert rows[0]["run_id"] in printed and rows[1]["run_id"] in printed
    with pytest.raises(Exception, match="not empty"):
        command.main(["sweep", "--param", "++topology.services.backtesting-engine.params.seed=7", "--out", str(out), *SMALL])


def test_a_run_that_never_finished_is_run_again_and_a_broken_result_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from framework.errors import UserError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    leftover = command.default_dir(SMALL)
    (leftover / "backtests" / leftover.name).mkdir(parents=True)  # what a run killed before its result leaves
    (leftover / "services").mkdir()
    assert command.main(["run", *SMALL]) == 0
    captured = capsys.readouterr()
    assert "did not finish: starting it again" in captured.err and f"backtest {leftover.name}" in captured.out
    result = next(leftover.glob("backtests/*/result.json"))
    assert not list(leftover.glob("backtests/*/*.partial"))
    result.write_bytes(b'{"run_id": "x", "metr')  # a truncated file (written by hand: the run writes it whole)
    with pytest.raises(UserError, match=r"result\.json: not a backtest result"):
        command.main(["show", str(leftover)])


def test_a_sweep_checks_every_combination_first_and_an_interrupted_sweep_leaves_no_run_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import subprocess
    import sys
    import time

    from framework.errors import FxflowError

    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    typo = ["sweep", "--param", "topology.services.backtesting-engine.params.sed=1,2", "--out", str(tmp_path / "typo"), *SMALL]
    with pytest.raises(FxflowError):
        command.main(typo)
    assert not (tmp_path / "typo").exists()  # refused before any run started
    with pytest.raises(FxflowError, match="--jobs 0"):
        command.main(["sweep", "--jobs", "0", "--param", "++topology.services.backtesting-engine.params.seed=7,8", *SMALL])

    long = reference.overrides(iso(END - 20_000 * 60_000), iso(END), report=False)
    sweep = subprocess.Popen([sys.executable, "-m", "framework.cli", "backtest", "sweep", "--jobs", "2", "--out", str(tmp_path / "s"),
                              "--param", "++topology.services.backtesting-engine.params.seed=7,8", *long],
                             cwd=ROOT, env={**os.environ, "FXFLOW_PROJECT": str(ROOT)}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip

    def children() -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(sweep.pid)], capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in found]

    deadline = time.monotonic() + 60
    while len(children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    runs = children()
    assert len(runs) == 2
    sweep.send_signal(signal.SIGTERM)
    assert sweep.wait(60) != 0
    for pid in runs:  # stopped with it, not left running under init
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_a_sweep_run_that_exited_0_without_a_result_was_interrupted_not_done(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run stopped by a signal stops gracefully (exit 0) before its end: the sweep must not count it as done."""
    (tmp_path / "000" / "backtests" / "bt-x").mkdir(parents=True)  # what a run stopped before its result leaves
    assert not command._finished(tmp_path / "000")
    assert command._sweep_report(tmp_path, [["a=1"]], {0: 0}) == 1
    assert "(failed)" in capsys.readouterr().out
    rows = orjson.loads((tmp_path / "sweep.json").read_bytes())
    assert rows[0]["exit"] == 0 and rows[0]["run_id"] is None
