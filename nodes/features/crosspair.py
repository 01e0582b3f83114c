"""Cross-pair features: the USD basket's return and rolling correlations with it and with gold.

Each row's inputs from other instruments (:func:`aux`) are as of the bar's close: for each
member, the log return of its last bar of the same timeframe that closed *strictly before*
this bar's close, so the arrival order of bars closing at the same instant cannot change a
value. The kernel then rolls over them like over the row's own bars.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from nodes.features.featureset import CrossPair
from nodes.features.numeric import lag_log_ratio, shift
from nodes.features.ta import ta as talib

if TYPE_CHECKING:
    from nodes.features.kernel import Rows

Series = Callable[[str], "tuple[np.ndarray, np.ndarray] | None"]
"""symbol → (ts_close, close) of its bars of the timeframe (sorted), or None when there are none."""


def last_return(ts_close: np.ndarray, close: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log return of the last bar closed strictly before each ``at``, and where there is one."""
    if len(close) < 2:
        return np.zeros(len(at)), np.zeros(len(at), dtype=bool)
    j = np.searchsorted(ts_close, at, side="left") - 1
    ok = j >= 1
    jj = np.where(ok, j, 1)
    ret = np.log(close[jj] / close[jj - 1])
    return np.where(ok, ret, 0.0), ok


def aux(at: np.ndarray, members: Sequence[tuple[str, int]], gold: str | None, series: Series) -> tuple[np.ndarray, np.ndarray]:
    """(basket, gold) inputs of rows closing at ``at``: the signed USD return averaged over the
    members that have one (0 when none has), and gold's return (0 before its first bar)."""
    total = np.zeros(len(at))
    count = np.zeros(len(at))
    for symbol, sign in members:
        got = series(symbol)
        if got is None:
            continue
        ret, ok = last_return(got[0], got[1], at)
        total += sign * ret
        count += ok
    basket = np.zeros(len(at))
    np.divide(total, count, out=basket, where=count > 0)
    gold_ret = np.zeros(len(at))
    if gold is not None and (got := series(gold)) is not None:
        gold_ret = last_return(got[0], got[1], at)[0]
    return basket, gold_ret


def compute(x: Rows, p: CrossPair) -> None:
    for h in p.horizons:
        out = x.col(f"xs_usd_ret_{h}")
        if h == 1:
            out[:] = x.rows(x.basket)
        else:
            x.running(talib.SUM, (x.basket,), h, out=(out,))
    own_prev = shift(lag_log_ratio(x.bars.close, 1), 1)
    for n in p.corr:
        x.running(talib.CORREL, (own_prev, x.gold), n, lead=2, out=(x.col(f"xs_gold_corr_{n}"),))
    for n in p.corr:
        x.running(talib.CORREL, (own_prev, x.basket), n, lead=2, out=(x.col(f"xs_usd_corr_{n}"),))
