"""The kernel's indicators equal TA-Lib's (and pandas-ta-classic's Keltner channels) run over the whole series.

The kernel computes each row over its anchored window (W bars before its block); the reference
runs the library once from the first bar. After the warm-up they agree within 1e-9 (absolute,
relative above 1): the windows' start no longer matters, which is also what `fxrun check
recursive` asserts for the declared set.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import talib

with warnings.catch_warnings():  # pandas-ta-classic uses a pandas API deprecated in pandas 3 at import
    warnings.simplefilter("ignore")
    import pandas_ta_classic as pta

from nodes.features.bars import Bars
from nodes.features.engine import Batch, History
from nodes.features.featureset import FeatureSetParams
from tests.test_features_support import resolved

TOL = 1e-9
N = 6000


def random_walk(n: int = N, seed: int = 11) -> Bars:
    """EURUSD-like 1m bars: GARCH(1,1) returns, wicks, tick counts and spreads."""
    rng = np.random.default_rng(seed)
    var, ret = np.empty(n), np.empty(n)
    var[0] = 1e-8
    for i in range(n):
        if i:
            var[i] = 2e-10 + 0.08 * ret[i - 1] ** 2 + 0.9 * var[i - 1]
        ret[i] = rng.normal(0, np.sqrt(var[i]))
    close = np.round(1.08 * np.exp(np.cumsum(ret)), 5)
    open_ = np.r_[1.08, close[:-1]]
    wick = np.abs(rng.normal(0, np.sqrt(var), (2, n)))
    high = np.round(np.maximum(open_, close) * (1 + wick[0]), 5)
    low = np.round(np.minimum(open_, close) * (1 - wick[1]), 5)
    high, low = np.maximum.reduce([high, open_, close]), np.minimum.reduce([low, open_, close])
    ts = 1_790_000_000_000 // 60_000 * 60_000 + 60_000 * np.arange(n, dtype=np.int64)
    spread = 1e-4 * (1 + np.abs(rng.normal(0, 0.3, n)))
    return Bars(ts, ts + 60_000, open_, high, low, close, rng.poisson(40, n).astype(float), spread, spread * 0.8, spread * 1.5)


def reference(b: Bars) -> dict[str, np.ndarray]:
    """What each indicator feature is, computed by TA-Lib over the whole series."""
    o, h, lo, c = b.open, b.high, b.low, b.close
    ref: dict[str, np.ndarray] = {}
    lr = np.r_[np.nan, np.log(c[1:] / c[:-1])]
    for n in (10, 20, 60):
        ref[f"rv_cc_{n}"] = talib.STDDEV(lr, n)
    for n in (10, 20, 50, 100, 200):
        ref[f"sma_dist_{n}"] = c / talib.SMA(c, n) - 1
    for n in (12, 26, 50):
        ref[f"ema_dist_{n}"] = c / talib.EMA(c, n) - 1
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    ref.update(macd=macd / c, macd_signal=signal / c, macd_hist=hist / c)
    ref["adx_14"], ref["plus_di_14"], ref["minus_di_14"] = talib.ADX(h, lo, c, 14) / 100, talib.PLUS_DI(h, lo, c, 14) / 100, talib.MINUS_DI(h, lo, c, 14) / 100
    down, up = talib.AROON(h, lo, 25)
    ref["aroon_up_25"], ref["aroon_down_25"], ref["aroon_osc_25"] = up / 100, down / 100, talib.AROONOSC(h, lo, 25) / 100
    ref["linreg_slope_20"] = talib.LINEARREG_SLOPE(c, 20) / c
    for n in (7, 14, 21):
        ref[f"rsi_{n}"] = talib.RSI(c, n) / 100
    k, d = talib.STOCH(h, lo, c, 14, 3, 0, 3, 0)
    ref["stoch_k"], ref["stoch_d"] = k / 100, d / 100
    ref["cci_20"], ref["willr_14"] = talib.CCI(h, lo, c, 20) / 100, talib.WILLR(h, lo, c, 14) / 100
    for n in (5, 10, 20):
        ref[f"roc_{n}"] = talib.ROC(c, n) / 100
    ref["mom_10"] = talib.MOM(c, 10) / c
    ref["ultosc"], ref["cmo_14"], ref["trix_15"] = talib.ULTOSC(h, lo, c, 7, 14, 28) / 100, talib.CMO(c, 14) / 100, talib.TRIX(c, 15) / 100
    ref["bop"] = talib.BOP(o, h, lo, c)
    for n in (7, 14, 28):
        ref[f"natr_{n}"] = talib.NATR(h, lo, c, n) / 100
    ref["trange_rel"] = talib.TRANGE(h, lo, c) / c
    for n in (20, 50):
        upper, middle, lower = talib.BBANDS(c, n, 2, 2, 0)
        ref[f"bb_pctb_{n}_2"], ref[f"bb_width_{n}_2"] = (c - lower) / (upper - lower), (upper - lower) / middle
    return ref


def keltner_reference(b: Bars) -> dict[str, np.ndarray]:
    frame = pd.DataFrame({"high": b.high, "low": b.low, "close": b.close})
    kc = pta.kc(frame["high"], frame["low"], frame["close"], length=20, scalar=2.0, mamode="ema", talib=False)
    lower, basis, upper = (kc[c].to_numpy() for c in kc.columns)
    return {"kc_pos_20": (b.close - lower) / (upper - lower), "kc_width_20": (upper - lower) / basis}


@pytest.fixture(scope="module")
def computed() -> tuple[Bars, dict[str, np.ndarray], np.ndarray]:
    bars = random_walk()
    fs = resolved(FeatureSetParams(groups={"returns": {}, "volatility": {}, "trend": {}, "momentum": {}, "bands": {}}), symbols=["EURUSD", "XAUUSD"])
    frame = Batch(fs, History({("EURUSD", "1m"): bars})).frame(("EURUSD", "1m"))
    assert frame.valid.sum() > N - 2 * (fs.history + fs.block)  # every row after the first complete block
    return bars, {n: frame.values[:, i] for i, n in enumerate(frame.names)}, frame.valid


def close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) <= TOL * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))


def test_every_indicator_equals_talib_over_the_whole_series_after_the_warmup(computed) -> None:
    bars, got, valid = computed
    ref = reference(bars)
    assert len(ref) >= 40
    for name, expected in ref.items():
        assert name in got, name
        ok = close(got[name][valid], expected[valid])
        assert ok.all(), f"{name}: {np.count_nonzero(~ok)} rows differ, first {got[name][valid][~ok][0]!r} vs {expected[valid][~ok][0]!r}"


def test_keltner_channels_equal_pandas_ta_classic(computed) -> None:
    bars, got, valid = computed
    for name, expected in keltner_reference(bars).items():
        ok = close(got[name][valid], expected[valid])
        assert ok.all(), f"{name}: {np.count_nonzero(~ok)} rows differ"


def test_realized_volatility_estimators_match_their_formulas(computed) -> None:
    bars, got, valid = computed
    hl2 = np.log(bars.high / bars.low) ** 2
    co2 = np.log(bars.close / bars.open) ** 2
    s = pd.Series
    pk = np.sqrt(s(hl2).rolling(20).mean().to_numpy() / (4 * np.log(2)))
    gk = np.sqrt(np.maximum(s(0.5 * hl2 - (2 * np.log(2) - 1) * co2).rolling(20).mean().to_numpy(), 0))
    assert close(got["rv_pk_20"][valid], pk[valid]).all()
    assert close(got["rv_gk_20"][valid], gk[valid]).all()
    lr = np.log(bars.close[1:] / bars.close[:-1])
    assert close(got["ret_1"][valid], np.r_[np.nan, lr][valid]).all()
