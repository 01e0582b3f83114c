"""The backtesting engine (issue 12): history through the live trading nodes on the simulated clock."""
