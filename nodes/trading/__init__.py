"""The money core every trading service shares: instrument rules, currency conversion, orders, positions.

One implementation of each, used live, in the demo and in backtests. Amounts are ``Decimal``:
prices on the instrument's tick, volumes on its lot step, P&L in the account currency rounded
to the cent when booked, so a backtest of a million trades ends on the same balance to the cent.
"""
