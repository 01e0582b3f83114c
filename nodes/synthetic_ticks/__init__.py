"""Seeded synthetic quotes: the demo's and the backtest's source while real feeds are absent."""
