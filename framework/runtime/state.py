"""Node state across restarts: ``Node.snapshot()`` saved as versioned JSON, handed to ``Node.restore()``.

The runtime saves a node's snapshot when it stops (and every ``snapshot_every`` where the
node asks) to ``<data_dir>/services/<service>/state.json``, replaced atomically, and gives it
back to the next instance before ``on_start``. The file says which node and which
``state_version`` wrote it; another node or version is set aside (renamed ``.stale``) with a
warning, never guessed at. It is JSON, never pickle: loading it runs no code, whoever wrote
the file. A restored snapshot is consumed (the file is removed): a crash later restores the
last periodic snapshot, or nothing, not a stale stop's state.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from framework.node import Node
    from framework.runtime.host import ServiceHost

log = logging.getLogger("fxflow.runtime")
FILE = "state.json"


def state_path(host: ServiceHost) -> Path:
    return Path(host.ctx.data_dir) / FILE


def save_state(host: ServiceHost, node: Node) -> None:
    try:
        state = node.snapshot()
    except Exception as exc:
        log.error("service %s: snapshot() failed, nothing saved: %s: %s", host.name, type(exc).__name__, exc)
        return
    if state is None:
        return
    doc = {"node": host.spec.name, "version": node.state_version, "saved_at": host.ctx.clock.now_ms(), "state": state}
    try:
        data = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        log.error("service %s: its snapshot is not JSON (%s); nothing saved", host.name, exc)
        return
    path = state_path(host)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def restore_state(host: ServiceHost, node: Node) -> bool:
    """Give ``node`` the snapshot its predecessor saved, if there is one it can take."""
    path = state_path(host)
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return False
    except (OSError, orjson.JSONDecodeError) as exc:
        _set_aside(path, f"unreadable ({exc})", host)
        return False
    if not isinstance(doc, dict) or doc.get("node") != host.spec.name or doc.get("version") != node.state_version:
        found = f"node {doc.get('node')!r} version {doc.get('version')!r}" if isinstance(doc, dict) else "no snapshot"
        _set_aside(path, f"written by {found}, this is node {host.spec.name!r} version {node.state_version}", host)
        return False
    node.restore(doc["state"])
    path.unlink(missing_ok=True)
    log.info("service %s: state restored (saved at %s)", host.name, doc.get("saved_at"))
    return True


def _set_aside(path: Path, why: str, host: ServiceHost) -> None:
    stale = path.with_name(path.name + ".stale")
    os.replace(path, stale)
    log.warning("service %s: %s is %s; starting without it (kept as %s)", host.name, path, why, stale.name)


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and scalars turned into lists and Python numbers (for snapshots)."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
