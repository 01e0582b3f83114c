"""Realized volatility per bar: close-to-close, Parkinson (high/low), Garman-Klass (OHLC)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nodes.features.featureset import Volatility
from nodes.features.numeric import lag_log_ratio, safe_div
from nodes.features.ta import ta as talib

if TYPE_CHECKING:
    from nodes.features.kernel import Rows

_PK = 1.0 / (4.0 * np.log(2.0))
_GK = 2.0 * np.log(2.0) - 1.0


def compute(x: Rows, p: Volatility) -> None:
    b = x.bars
    if "cc" in p.estimators:
        lr = lag_log_ratio(b.close, 1)
        for n in p.windows:
            x.running(talib.STDDEV, (lr,), n, lead=1, out=(x.col(f"rv_cc_{n}"),))
    if "pk" in p.estimators or "gk" in p.estimators:
        hl2 = np.log(b.high / b.low) ** 2
    if "pk" in p.estimators:
        for n in p.windows:
            (mean,) = x.running(talib.SMA, (hl2,), n)
            pk = x.col(f"rv_pk_{n}")
            np.sqrt(np.multiply(mean, _PK, out=x.via(pk)), out=pk)
    if "gk" in p.estimators:
        gk = 0.5 * hl2 - _GK * np.log(b.close / b.open) ** 2
        for n in p.windows:
            (mean,) = x.running(talib.SMA, (gk,), n)
            gk_n = x.col(f"rv_gk_{n}")
            np.sqrt(np.maximum(mean, 0.0, out=x.via(gk_n)), out=gk_n)
    if p.ratio is not None:
        short, long = p.ratio
        safe_div(x.col(f"rv_cc_{short}"), x.col(f"rv_cc_{long}"), 1.0, out=x.col(f"rv_ratio_{short}_{long}"))
