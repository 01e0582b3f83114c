"""The backtesting engine under a quant user's mistakes and habits: what they must not break.

- the order ``pairs=`` lists the symbols in enters no result (the config hash takes them as a set, and the run id and
  ``fxrun backtest run``'s directory come from the hash);
- a sweep value or a walk-forward override that does not validate is one error naming the field and where it was
  written, before any process starts (not a failed child, not a traceback);
- a window whose end is not after its start names ``params.end``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from framework.cli import main as fxrun
from framework.errors import UserError
from framework.testing import load, make_runtime, query_df
from nodes.backtest import command, reference

ROOT = Path(__file__).resolve().parents[1]
ENGINE = "++topology.services.backtesting-engine.params"
END = 1793397600000  # Friday 2026-10-30T22:00Z


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


SMALL = reference.overrides(iso(END - 60 * 60_000), iso(END), report=False)


def run_sync(coro: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _backtest(data_dir: Path, pairs: str) -> tuple[str, pd.DataFrame]:
    """Two symbols whose SMA rule signals at the same closes, and room for one open position: who trades depends on
    which signal the risk gate judges first."""
    window = [o for o in reference.overrides(iso(END - 240 * 60_000), iso(END), report=False) if not o.startswith("pairs=")]
    loaded = load(data_dir, f"pairs={pairs}", *window, "++topology.services.risk-management.params.max_open_positions=1",
                  profile="backtest")  # fmt: skip
    rt = make_runtime(loaded, data_dir)
    await rt.run()
    fills = await query_df(data_dir, "SELECT ts, symbol, side, quantity, price FROM executions ORDER BY ts, symbol")
    return rt.config_hash, fills


def test_the_order_of_the_pairs_changes_neither_the_hash_nor_the_trades(tmp_path: Path) -> None:
    first_hash, first = run_sync(_backtest(tmp_path / "a", "[EURUSD,GBPUSD]"))
    second_hash, second = run_sync(_backtest(tmp_path / "b", "[GBPUSD,EURUSD]"))
    assert first_hash == second_hash  # one configuration: `fxrun backtest run` answers the second from the first's result
    assert len(first) > 5
    assert first.equals(second), (first.groupby("symbol").size().to_dict(), second.groupby("symbol").size().to_dict())


def test_a_sweep_value_that_does_not_validate_is_refused_before_any_run_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    out = tmp_path / "sweep"
    with pytest.raises(UserError) as refused:
        command.main(["sweep", "--param", f"{ENGINE}.seed=7,abc", "--out", str(out), *SMALL])
    text = str(refused.value)
    assert f"{ENGINE}.seed=abc" in text and "params.seed" in text and "<command line>" in text, text
    assert not out.exists()  # the valid combination did not run either


def test_a_window_ending_before_it_starts_names_its_end(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    assert fxrun(["topology=backtest", f"data_dir={tmp_path / 'run'}", f"{ENGINE}.end=2026-10-28T00:00Z"]) == 1
    line = next(line for line in capsys.readouterr().err.splitlines() if "FX102" in line)
    assert "backtesting-engine: params.end:" in line and "is not after start" in line and "(<command line>)" in line, line


def test_a_walkforward_override_that_does_not_validate_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    code = fxrun(["backtest", "walkforward", "--train", "2d", "--test", "1d", "--out", str(tmp_path / "out"), f"{ENGINE}.seed=abc"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("fxrun backtest walkforward: ") and "backtesting-engine: params.seed" in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_sweep_axis_over_data_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run's data_dir= comes last and wins: an axis over data_dir would run one configuration several times."""
    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    with pytest.raises(UserError, match="leave data_dir= out"):
        command.main(["sweep", "--param", f"data_dir={tmp_path / 'a'},{tmp_path / 'b'}", "--out", str(tmp_path / "s"), *SMALL])
    assert not (tmp_path / "s").exists()


def test_fxrun_backtest_run_takes_an_override_that_removes_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """``~key`` is a Hydra override as ``fxrun`` takes them (README), not an unrecognized argument."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    assert command.main(["run", *SMALL, "~topology.services.backtesting-engine.params.timeframes"]) == 0
    result = command.results_in(next((tmp_path / ".fxrun-backtests").iterdir()))[0]
    assert "timeframes" not in [k for k, v in result["details"]["params"].items() if v is not None]
    assert result["details"]["timeframes"][:2] == ["1m", "5m"] and result["metrics"]["bars"] > 60


def test_a_backtest_that_fails_mid_run_exits_1_naming_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """A failure after the replay started is a `failed` status and a run that ends; fxrun says so and exits 1 (a sweep
    then reports that child FAILED, not as a run stopped before its end)."""
    from nodes.backtest import tape as tapes

    real = tapes.Tape.chunk
    calls = {"n": 0}

    def failing(self: Any, lo: int, hi: int) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("the disk went away")
        return real(self, lo, hi)

    monkeypatch.setattr(tapes.Tape, "chunk", failing)
    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    window = reference.overrides(iso(END - 3000 * 60_000), iso(END), report=False)
    code = fxrun(["topology=backtest", f"data_dir={tmp_path / 'run'}", *window])
    err = capsys.readouterr().err
    assert code == 1, err
    failed = [line for line in err.splitlines() if line.startswith("fxrun: error: the run failed: ")]
    assert len(failed) == 1 and "backtesting-engine: backtest bt-" in failed[0] and "OSError: the disk went away" in failed[0], err
    assert "Traceback" not in err.split("fxrun: error:")[-1]


def test_a_backtest_whose_start_fails_exits_1_naming_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    window = reference.overrides(iso(END - 60 * 60_000), iso(END), report=False)
    data_dir = tmp_path / "run"
    code = fxrun(["topology=backtest", f"data_dir={data_dir}", *window,
                  "++topology.services.backtesting-engine.params.artifacts=missing-manifest.json"])  # fmt: skip
    err = capsys.readouterr().err
    assert not list((data_dir / "backtests").glob("*/result.json"))  # the run did nothing
    assert code == 1, err[-2000:]
    assert "fxrun: error: the run failed: backtesting-engine: stopped before its input was read: " in err, err[-2000:]
