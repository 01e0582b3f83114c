"""Momentum oscillators (RSI, stochastic, CCI, Williams %R, ROC, MOM, ULTOSC, CMO, TRIX, BOP), scaled to ~unit range."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nodes.features.featureset import Momentum
from nodes.features.ta import ta as talib

if TYPE_CHECKING:
    from nodes.features.kernel import Rows


def compute(x: Rows, p: Momentum) -> None:
    b = x.bars
    o, h, lo, c = b.open, b.high, b.low, b.close
    for n in p.rsi:
        x.running(talib.RSI, (c,), n, out=(x.col(f"rsi_{n}"),), over=100.0)
    if p.stoch is not None:
        fastk, slowk, slowd = p.stoch
        x.running(talib.STOCH, (h, lo, c), fastk, slowk, 0, slowd, 0, out=(x.col("stoch_k"), x.col("stoch_d")), over=100.0)
    if p.cci is not None:
        x.phased(talib.CCI, (h, lo, c), p.cci, period=p.cci, lookback=p.cci - 1, out=x.col(f"cci_{p.cci}"), over=100.0)
    if p.willr is not None:
        np.divide(x.local(talib.WILLR, (h, lo, c), p.willr, lookback=p.willr - 1), 100.0, out=x.col(f"willr_{p.willr}"))
    for n in p.roc:
        np.subtract(x.local(talib.ROCR, (c,), n, lookback=n), 1.0, out=x.col(f"roc_{n}"))
    for n in p.mom:
        np.divide(x.local(talib.MOM, (c,), n, lookback=n), x.rows(c), out=x.col(f"mom_{n}"))
    if p.ultosc is not None:
        x.running(talib.ULTOSC, (h, lo, c), *p.ultosc, out=(x.col("ultosc"),), over=100.0)
    if p.cmo is not None:
        x.running(talib.CMO, (c,), p.cmo, out=(x.col(f"cmo_{p.cmo}"),), over=100.0)
    if p.trix is not None:
        x.running(talib.TRIX, (c,), p.trix, out=(x.col(f"trix_{p.trix}"),), over=100.0)
    if p.bop:
        x.col("bop")[:] = x.local(talib.BOP, (o, h, lo, c), lookback=0)
