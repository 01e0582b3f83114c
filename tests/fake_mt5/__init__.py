"""A local fake of MetaTrader 5 behind mt5linux's RPyC bridge (see :mod:`.terminal`, :mod:`.server`)."""
