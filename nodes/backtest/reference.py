"""The reference strategy of the tests and the bench: an SMA fast/slow crossover on 1-minute bars, no costs.

Overrides of ``topology=backtest`` (Hydra strings, as ``fxrun`` takes them), so the run is the
profile's own services with declared params, nothing wired differently:

- features: a set of two columns, ``sma_dist_<fast>`` and ``sma_dist_<slow>`` (close / SMA - 1),
  ``history`` W = ``slow + 1`` (the trend group's warm-up: the SMA and one bar of slope, whose
  columns are dropped) and ``block`` 1, so every row is computed over its own last W + 1 bars and
  the first row is the bar at index W (:func:`warmup`);
- inference: the ``sma_cross`` rule on them (``form: distance``: long while the fast SMA is above
  the slow one, short while below, flat on a tie), a signal per bar. The tie is a dead zone of
  :data:`BAND`: the SMAs of prices on a 0.00001 grid are exactly equal every few hundred bars, and
  two exact computations of an exact tie differ only in their last bits (TA-Lib's running sum
  starts at the window's first bar here, at the series' first bar in backtesting.py);
- risk: a fixed volume (``fixed_lots``), no stop, no take profit, loss limits and the spread
  filter out of the way, so every change of side is approved;
- paper broker: fills at the next 1-minute bar's open, no spread, no slippage, no commission;
- performance-monitoring: no alert limits.

:func:`backtesting_py_trades` runs the same rule in backtesting.py (a test and bench dependency)
with the semantics that make the two comparable: orders at the next bar's open after the signal
bar (``trade_on_close=False``), a change of side closes the open trade and opens the other one at
the same open (``exclusive_orders=True``), nothing before the bar the feature set's warm-up ends,
and no order from a bar that closes when the market is closed (Friday 22:00 UTC: the paper broker
refuses an order then, 10018, and the next bar's signal asks again).
"""

from __future__ import annotations

from typing import Any

BAND = 1e-12
"""Gaps of the two distances within this are a tie (flat): far below a real gap (about 1e-7), far above float noise (1e-16)."""
GROUPS = ("returns", "volatility", "trend", "momentum", "bands", "activity", "crosspair", "session", "events", "macro", "context")
ENGINE = "backtesting-engine"


def _yaml(value: Any) -> str:
    """``value`` in Hydra's override grammar (flow-style YAML)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return f"'{value}'" if any(c in value for c in ":,[]{} ") else value
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    raise TypeError(f"no override syntax for {type(value).__name__}")


def leaves(prefix: str, value: Any) -> list[str]:
    """``++path=value`` overrides for every leaf of ``value`` (a dict is merged key by key, and Hydra refuses to add
    a key through a dict literal; ``++`` sets a key whether the profile has it or not). Empty dicts and lists are leaves."""
    if isinstance(value, dict) and value:
        return [o for k, v in value.items() for o in leaves(f"{prefix}.{k}", v)]
    return [f"++{prefix}={_yaml(value)}"]


def warmup(slow: int) -> int:
    """The feature set's W: the index of the first bar with a feature row."""
    return slow + 1


def feature_set(fast: int, slow: int) -> dict[str, Any]:
    trend = {"sma": [fast, slow], "ema": [], "slope_lag": 1, "crosses": [], "macd": None, "adx": None, "aroon": None, "linreg": None}
    groups: dict[str, Any] = {name: None for name in GROUPS}
    groups["trend"] = trend
    return {"name": f"sma_{fast}_{slow}", "history": warmup(slow), "block": 1, "groups": groups, "drop": [f"sma_slope_{fast}", f"sma_slope_{slow}"]}


def overrides(start: str, end: str, *, symbol: str = "EURUSD", fast: int = 10, slow: int = 30, lots: float = 1.0,
              source: str = "synthetic", seed: int = 7, report: bool = True) -> list[str]:  # fmt: skip
    """``fxrun topology=backtest`` overrides of the reference run over ``[start, end)``."""
    services = "topology.services"
    engine = {"source": source, "start": start, "end": end, "timeframes": ["1m"], "seed": seed, "report": report}
    rule = {"kind": "sma_cross", "timeframe": "1m", "params": {"fast": f"sma_dist_{fast}", "slow": f"sma_dist_{slow}", "band": BAND}}
    risk = {"fixed_lots": lots, "stop_atr": None, "take_profit_atr": None, "max_daily_loss": 0.99, "max_drawdown": 0.99,
            "max_spread_pips": {"default": 1e6}, "max_leverage": 1000.0, "max_symbol_exposure": {"default": 1e12},
            "max_currency_exposure": 1e12, "throttle_orders": 1000}  # fmt: skip
    paper = {"fill_on": "bar_open", "bar_timeframe": "1m", "spread": {"source": "fixed", "points": {"default": 0.0}},
             "slippage": {"points": 0.0, "per_lot": 0.0}, "commission": {"per_lot": 0.0, "per_million": 0.0}}  # fmt: skip
    performance = {"drawdown_limit": None, "daily_loss_limit": None, "low_sharpe": None}
    return [
        f"pairs=[{symbol}]",
        *leaves(f"{services}.{ENGINE}.params", engine),
        *leaves(f"{services}.feature-engineering-service.params.feature_set", feature_set(fast, slow)),
        *leaves(f"{services}.feature-engineering-service.params.timeframes", ["1m"]),
        *leaves(f"{services}.inference-service.params.models", {"sma-cross-1m": None, f"sma-{fast}-{slow}": rule}),
        *leaves(f"{services}.risk-management.params", risk),
        *leaves(f"{services}.mt5-connector.params.paper", paper),
        *leaves(f"{services}.performance-monitoring.params", performance),
    ]


def backtesting_py_trades(ts_ms: Any, open_: Any, high: Any, low: Any, close: Any, *, fast: int = 10, slow: int = 30,
                          size: int = 100_000) -> Any:  # fmt: skip
    """backtesting.py's trades (a DataFrame: Size, EntryTime, ExitTime, EntryPrice, ExitPrice; open trades with no exit)
    for the same rule on the same bars, and its run time in seconds. The SMAs are TA-Lib's (the feature kernel's)."""
    import time
    import warnings

    import numpy as np
    import pandas as pd
    from backtesting import Backtest, Strategy

    from nodes.features.ta import ta as talib
    from nodes.marketdata.synthetic import in_weekend

    frame = pd.DataFrame(
        {"Open": open_, "High": high, "Low": low, "Close": close, "Volume": np.ones(len(close))},
        index=pd.to_datetime(np.asarray(ts_ms, dtype=np.int64), unit="ms"),
    )

    first = warmup(slow)
    closes = np.asarray(ts_ms, dtype=np.int64) + 60_000
    closed = np.fromiter((in_weekend(int(t)) for t in closes), dtype=bool, count=len(closes))

    def distance(c: np.ndarray, n: int) -> np.ndarray:
        out = c / talib.SMA(c, n)
        out -= 1.0
        return out  # sma_dist_<n>, as the trend group computes it

    class SmaState(Strategy):
        """Long while SMA fast > SMA slow, short while below, from the first bar the feature set publishes."""

        def init(self) -> None:
            self.fast = self.I(distance, self.data.Close.astype(np.float64), fast)
            self.slow = self.I(distance, self.data.Close.astype(np.float64), slow)

        def next(self) -> None:
            i = len(self.data) - 1
            if i < first or closed[i]:  # the feature set's warm-up (its first row is bar `first`); the market closed
                return
            gap = -(self.fast[-1] - self.slow[-1])  # the sma_cross rule, form distance: the fast SMA is above when its distance is below
            held = self.position.size
            if gap > BAND:
                if held <= 0:
                    self.buy(size=size)
            elif gap < -BAND:
                if held >= 0:
                    self.sell(size=size)
            elif held:
                self.position.close()

    started = time.perf_counter()
    bt = Backtest(frame, SmaState, cash=1e12, spread=0.0, commission=0.0, margin=1.0, trade_on_close=False, hedging=False,
                  exclusive_orders=True, finalize_trades=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "some trades remain open": the last one is, on purpose (compared as open)
        stats = bt.run()
    elapsed = time.perf_counter() - started
    trades = stats["_trades"][["Size", "EntryTime", "ExitTime", "EntryPrice", "ExitPrice"]].copy()
    open_trades = [
        {"Size": t.size, "EntryTime": t.entry_time, "ExitTime": pd.NaT, "EntryPrice": t.entry_price, "ExitPrice": np.nan}
        for t in stats["_strategy"].trades
    ]
    if open_trades:
        trades = pd.concat([trades, pd.DataFrame(open_trades)], ignore_index=True)
    return trades, elapsed
