"""Nothing from the future: a changed future leaves earlier rows alone, FRED is used only once
released, and `fxrun check lookahead | recursive` pass on the declared sets and fail on planted
canaries (and on a publication lag declared shorter than the real one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nodes.features.bars import Bars
from nodes.features.engine import Batch, History
from nodes.features.featureset import Macro, MacroSeries
from nodes.features.macro import MacroData
from tests.test_features_support import resolved, small_params, world

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400_000
SYMBOLS = ["EURUSD", "USDJPY", "XAUUSD"]
FRED_OVERRIDE = "++topology.services.feature-engineering-service.params.feature_set.groups.macro.series.DFF.lag=0d"


def test_changing_any_future_bar_or_datum_leaves_every_earlier_row_unchanged() -> None:
    fs = resolved(small_params(), symbols=SYMBOLS)
    w = world(fs, SYMBOLS, 700)
    g = fs.params.groups
    full = w.history(g.events, g.macro)
    before = {(f.symbol, f.timeframe): f for f in Batch(fs, full).frames(rows=1 << 40)}
    rng = np.random.default_rng(5)
    for cut in sorted(rng.integers(w.end_ms - 400 * 60_000, w.end_ms, size=3)):
        changed: dict[tuple[str, str], Bars] = {}
        for key, b in full.bars.items():
            future = b.ts_close > cut
            shock = np.where(future, np.exp(rng.normal(0, 0.01, len(b))), 1.0)
            high, low = b.high * shock * np.where(future, 1.001, 1.0), b.low * shock * np.where(future, 0.999, 1.0)
            changed[key] = Bars(b.ts, b.ts_close, b.open * shock, high, low, b.close * shock, b.ticks + future * 50, b.spread, b.spread_min, b.spread_max)
        other = w.history(g.events, g.macro, int(cut))  # the external data as known at the cut: nothing later
        after = {(f.symbol, f.timeframe): f for f in Batch(fs, History(changed, other.calendar, other.macro)).frames(rows=1 << 40)}
        compared = 0
        for key, f in before.items():
            rows = np.flatnonzero(f.complete & (f.ts_close <= cut))
            assert f.values[rows].tobytes() == after[key].values[rows].tobytes(), f"{key}: a row at or before the cut changed"
            assert (f.valid[rows] == after[key].valid[rows]).all()
            compared += len(rows)
            later = np.flatnonzero(f.valid & (f.ts_close > cut + 60 * 60_000))
            if key[1] == "1m" and len(later):
                assert f.values[later].tobytes() != after[key].values[later].tobytes()  # the shock did reach later rows
        assert compared > 1000


def test_a_fred_value_is_used_only_from_its_release_never_from_its_observation_date() -> None:
    macro = MacroData(Macro(series={"CPIAUCSL": MacroSeries(lag="47d")}, spreads=[]))
    jan, feb = 1_767_225_600_000, 1_769_904_000_000  # 2026-01-01 and 2026-02-01 (observation dates)
    macro.add({"type": "fred_indicators", "series": "CPIAUCSL", "ts": jan, "value": 320.0})
    macro.add({"type": "fred_indicators", "series": "CPIAUCSL", "ts": feb, "value": 321.0}, arrived_ms=feb + 50 * DAY)  # late
    at = np.array([jan, jan + 47 * DAY, jan + 47 * DAY + 1, feb + 47 * DAY + 1, feb + 50 * DAY, feb + 50 * DAY + 1])
    got = macro.value_at("CPIAUCSL", at)
    assert np.isnan(got[0]) and np.isnan(got[1])  # not before observation date + lag (strictly)
    assert got[2] == 320.0 and got[3] == 320.0 and got[4] == 320.0  # February's is due at +47d but arrived at +50d
    assert got[5] == 321.0


def test_macro_features_of_every_row_use_only_released_observations() -> None:
    fs = resolved(small_params(groups={"returns": {}, "macro": {}}), symbols=["EURUSD", "XAUUSD"], timeframes=["1h", "1d"])
    w = world(fs, ["EURUSD", "XAUUSD"], 900)
    g = fs.params.groups
    frame = Batch(fs, w.history(g.events, g.macro)).frame(("EURUSD", "1h"))
    col = frame.names.index("macro_dff")
    released = sorted((k.known_at, k.event["ts"], k.event["value"]) for k in w.fred if k.event["series"] == "DFF")
    checked = 0
    for i in np.flatnonzero(frame.valid):
        close = int(frame.ts_close[i])
        value = frame.values[i, col]
        source = [r for r in released if r[2] == value and r[1] + 5 * DAY < close]
        assert source, f"row closing at {close} uses a DFF value not yet usable"
        assert any(r[0] <= close for r in source), f"row closing at {close} uses DFF {value} before its release"
        checked += 1
    assert checked > 200


def fxrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "framework.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("verb", ["lookahead", "recursive"])
def test_the_checks_pass_on_the_declared_feature_sets(verb: str) -> None:
    for profile, extra in (("live", ["--symbols", "EURUSD,XAUUSD", "--cuts", "3"] if verb == "lookahead" else ["--symbols", "EURUSD,XAUUSD"]),
                           ("demo", [])):  # fmt: skip
        done = fxrun("check", verb, f"topology={profile}", *(extra if verb == "lookahead" or profile == "live" else []))
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{verb}: feature set ") and lines[0].rstrip().endswith(")") and ": passed (" in lines[0], lines
        assert int(lines[0].split(" published rows compared")[0].rsplit(" ", 1)[1]) > 1000, lines


def test_lookahead_fails_on_planted_look_ahead_features_one_line_each() -> None:
    done = fxrun("check", "lookahead", "topology=demo", "--plant", "next_bar", "--plant", "window_mean", "--plant", "cumulative")
    assert done.returncode == 1, done.stdout + done.stderr
    offending = [line for line in done.stdout.splitlines() if line.startswith("lookahead: planted_")]
    assert [line.split()[1] for line in offending] == ["planted_next_bar", "planted_window_mean"], done.stdout  # cumulative is causal
    assert "changed when the history was cut at" in offending[0]
    assert done.stdout.splitlines()[-1].endswith(")") and "2 feature(s) failed" in done.stdout.splitlines()[-1]


def test_lookahead_fails_when_a_declared_publication_lag_is_shorter_than_the_real_one() -> None:
    done = fxrun("check", "lookahead", "topology=demo", "--cuts", "12", FRED_OVERRIDE)
    assert done.returncode == 1, done.stdout + done.stderr
    offending = [line.split()[1] for line in done.stdout.splitlines() if not line.startswith("lookahead: feature set ")]
    assert offending == ["macro_dff"], done.stdout


def test_recursive_fails_on_a_feature_that_depends_on_the_history_before_its_warmup() -> None:
    done = fxrun("check", "recursive", "topology=demo", "--plant", "cumulative", "--plant", "next_bar")
    assert done.returncode == 1, done.stdout + done.stderr
    offending = [line for line in done.stdout.splitlines() if line.startswith("recursive: planted_")]
    assert len(offending) == 1 and offending[0].startswith("recursive: planted_cumulative ("), done.stdout
    short = fxrun("check", "recursive", "topology=live", "--symbols", "EURUSD,XAUUSD", "++topology.services.feature-engineering-service.params.feature_set.history=256")
    assert short.returncode == 1 and "recursive: rsi_21 (" in short.stdout, short.stdout + short.stderr


def test_check_usage_mistakes_are_one_line() -> None:
    done = fxrun("check", "lookahead", "--plant", "nonsense")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "not a canary" in done.stderr
    vacuous = fxrun("check", "recursive", "topology=live", "--bars", "1000", "++topology.services.feature-engineering-service.params.feature_set.history=5000")
    assert vacuous.returncode == 1 and vacuous.stdout.strip().endswith("nothing was checked"), vacuous.stdout  # never a silent pass
    bad = fxrun("check", "lookahead", "++topology.services.feature-engineering-service.params.feature_set.groups.tend={}")
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "unknown feature group 'tend' (did you mean trend?)" in bad.stderr and "topology/demo.yaml:" in bad.stderr
