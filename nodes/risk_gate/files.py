"""The two files a risk gate keeps in its service directory (``<data_dir>/services/<service>/``).

- ``trading_state.json``: the trading state of record, written by the gate (atomically, synced)
  on every change, so a halt survives a crash between snapshots; read back at start.
- ``control.json``: the verb's mailbox where no bus reaches the gate (the in-process profiles:
  demo, backtest). ``fxrun risk halt`` writes it; the gate takes it (renamed to
  ``control.taken.json``) and applies it at start and before each decision.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

STATE_FILE = "trading_state.json"
MAILBOX = "control.json"
TAKEN = "control.taken.json"


def service_dir(data_dir: Path | str, service: str) -> Path:
    """Where the runtime gives a service its ``ctx.data_dir``."""
    return Path(data_dir) / "services" / service


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The document, or None when there is none; a file that is not a JSON object raises ValueError."""
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    return doc


class Mailbox:
    """``control.json``, claimed by renaming it (to ``control.taken.json``) before it is read: each command is taken
    once, also across a crash or with a corrupt state file, and one written meanwhile waits for the next look. A look
    at an empty mailbox is one failed rename (about a microsecond)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.taken = path.with_name(TAKEN)

    def take(self) -> dict[str, Any] | None:
        try:
            os.replace(self.path, self.taken)
        except FileNotFoundError:
            return None
        return read_json(self.taken)
