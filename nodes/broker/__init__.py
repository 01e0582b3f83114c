"""Brokers: one async interface (:mod:`.base`), three implementations.

- :mod:`.paper`: the paper broker (default): fills on the market data it is fed, with spread,
  slippage, commission, swap, margin and stop-out models (:mod:`.models`), state as JSON.
- :mod:`.mt5`: MetaTrader 5 over its Python module API, either ``import MetaTrader5`` (Windows)
  or the RPyC bridge mt5linux serves from Wine (:mod:`.terminal`).

Money is exact (``Decimal``, :mod:`nodes.trading`). Every request and response a broker makes is
journaled (:mod:`.journal`) with secrets masked, for the connector to log.
"""
