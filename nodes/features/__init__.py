"""The feature library: one causal kernel per (symbol, timeframe), as-of joins, batch and streaming.

- :mod:`.featureset` — the declared set (groups and their parameters), its feature names and its
  version hash; light (pydantic only), so the node's spec validates a topology without TA-Lib.
- :mod:`.bars` — bars as columns, and the checks a bar message must pass.
- :mod:`.returns`, :mod:`.volatility`, :mod:`.trend`, :mod:`.momentum`, :mod:`.bands`,
  :mod:`.activity`, :mod:`.crosspair` — the kernel groups (TA-Lib and numpy, causal).
- :mod:`.session`, :mod:`.events`, :mod:`.macro`, :mod:`.context` — as-of joins on the bar's close.
- :mod:`.kernel`, :mod:`.windows` — the kernel over anchored windows (what makes batch and stream equal).
- :mod:`.engine` — batch computation over a history, and the streaming engine.
- :mod:`.synthetic`, :mod:`.checks` — deterministic history and the look-ahead / recursive checks.
"""
