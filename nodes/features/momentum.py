"""Momentum oscillators (RSI, stochastic, CCI, Williams %R, ROC, MOM, ULTOSC, CMO, TRIX, BOP), scaled to ~unit range."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nodes.features.featureset import Momentum
from nodes.features.ta import ta as talib

if TYPE_CHECKING:
    from nodes.features.kernel import Rows


RUN = 256
"""Bars per run of the first, coarse bound of :func:`exact_totals`."""


def exact_totals(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> bool:
    """Whether every running total of TA-Lib's ULTOSC over these bars (and any run of them) is exact.

    ULTOSC adds each bar's terms (close - true low, true range) to running totals and subtracts them
    ``period`` bars later, so its value at a bar depends in general on where the run started (the
    rounding of the totals). When every such addition is exact, each total is the exact sum of the
    last bars' terms and the value depends on those ``period`` bars alone: computed once over many
    blocks, it has the bits of each block's own run. A term is the difference of two of a bar's
    high, low, close and the previous close; positive doubles not below the lowest price ``m`` are
    multiples of ``u`` = ulp(m), and any sum of multiples of ``u`` below 2**53 u is exact. A total
    holds at most ``period`` terms, each at most the range of its bar and the previous one: exact
    when ``period`` times the widest such range is below 2**52 u (a factor 2 for the rounding of
    that bound). The range of two consecutive bars is bounded first by that of the two runs of
    :data:`RUN` bars they lie in (a few reductions), then, if that is not enough, bar by bar.
    Otherwise (ranges that wide, a price that is not positive or not finite) the caller runs each
    window."""
    n = len(close)
    if n < 2:
        return False
    starts = np.arange(0, n, RUN)
    top = np.maximum(np.maximum(np.maximum.reduceat(high, starts), np.maximum.reduceat(low, starts)), np.maximum.reduceat(close, starts))
    bottom = np.minimum(np.minimum(np.minimum.reduceat(high, starts), np.minimum.reduceat(low, starts)), np.minimum.reduceat(close, starts))
    lowest = float(bottom.min())
    if not lowest > 0.0:  # NaN too
        return False
    limit = 2.0**52 * float(np.spacing(lowest)) / period
    if len(starts) > 1:
        top, bottom = np.maximum(top[1:], top[:-1]), np.minimum(bottom[1:], bottom[:-1])
    if float((top - bottom).max()) < limit:
        return True
    top = np.maximum(np.maximum(high[1:], low[1:]), np.maximum(close[1:], close[:-1]))
    bottom = np.minimum(np.minimum(high[1:], low[1:]), np.minimum(close[1:], close[:-1]))
    return bool(float(np.subtract(top, bottom, out=top).max()) < limit)


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
    ct = x.rows(c)
    for n in p.roc:  # TA-Lib's ROCR: close / close[-n], 0 where close[-n] is 0
        earlier, roc = x.lag(c, n), x.col(f"roc_{n}")
        rocr = np.divide(ct, earlier, out=x.via(roc))
        zero = earlier == 0
        if zero.any():
            rocr[zero] = 0.0
        np.subtract(rocr, 1.0, out=roc)
    for n in p.mom:  # TA-Lib's MOM: close - close[-n]
        mom = x.col(f"mom_{n}")
        np.divide(np.subtract(ct, x.lag(c, n), out=x.via(mom)), ct, out=mom)
    if p.ultosc is not None:
        period = max(p.ultosc)
        if len(x.segments) > 1 and exact_totals(h, lo, c, period):
            np.divide(x.local(talib.ULTOSC, (h, lo, c), *p.ultosc, lookback=period), 100.0, out=x.col("ultosc"))
        else:
            x.running(talib.ULTOSC, (h, lo, c), *p.ultosc, out=(x.col("ultosc"),), over=100.0)
    if p.cmo is not None:
        x.running(talib.CMO, (c,), p.cmo, out=(x.col(f"cmo_{p.cmo}"),), over=100.0)
    if p.trix is not None:
        x.running(talib.TRIX, (c,), p.trix, out=(x.col(f"trix_{p.trix}"),), over=100.0)
    if p.bop:
        x.col("bop")[:] = x.local(talib.BOP, (o, h, lo, c), lookback=0)
