"""TA-Lib's functions without the wrapper that looks for pandas and polars arguments on every call.

The kernel passes contiguous float64 numpy arrays only, so the wrapper's checks (a few us a call,
some 45 calls per streaming update) buy nothing; ``__wrapped__`` is the compiled function
``talib.SMA`` and the others end up calling.
"""

from __future__ import annotations

from types import SimpleNamespace

import talib

ta = SimpleNamespace(**{name: getattr(getattr(talib, name), "__wrapped__", getattr(talib, name)) for name in talib.get_functions()})
