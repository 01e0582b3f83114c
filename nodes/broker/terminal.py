"""The MetaTrader 5 terminal as plain data: the ``MetaTrader5`` module in-process, or over mt5linux's RPyC bridge.

Both expose the MetaTrader5 package's functions (``initialize``, ``order_send``, ``history_deals_get``…);
:meth:`Terminal.call` runs one and returns its result as plain Python (namedtuples as dicts,
tuples as lists), so the client never holds a proxy or a class of the remote package.

- :class:`ModuleTerminal`: ``import MetaTrader5`` (Windows only; imported when first used).
- :class:`RpycTerminal`: the protocol of mt5linux, the bridge that runs the Windows package in
  Wine behind an RPyC *classic* server (``python -m mt5linux`` in Wine's Python, or mt5linux's
  ``mt5server.exe``; port 18812): the client executes ``import MetaTrader5 as mt5`` on the server
  and evaluates ``mt5.<function>(<arguments>)`` expressions there, as mt5linux's own client does.
  Ours also converts the result to plain data on the server side (one round trip, and nothing
  to unpickle that only exists on Windows). mt5linux's Linux package is not needed: its 1.x
  client starts a Docker container of its own before it connects, which a bridge already
  running (or a test's server) does not want.

Calls block: the broker runs them in a worker thread.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from nodes.broker.base import BrokerUnavailable

PLAIN_SOURCE = '''
def _fxflow_plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "_asdict"):
        return {k: _fxflow_plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {str(k): _fxflow_plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_fxflow_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return repr(value)
'''
_namespace: dict[str, Any] = {}
exec(PLAIN_SOURCE, _namespace)  # noqa: S102 - the same converter runs here and on the bridge
plain = _namespace["_fxflow_plain"]


class Terminal(Protocol):
    def call(self, function: str, *args: Any, **kwargs: Any) -> Any: ...

    def close(self) -> None: ...


def load_metatrader5() -> Any:
    """The ``MetaTrader5`` package, or one line saying why it cannot be had here."""
    try:
        return importlib.import_module("MetaTrader5")
    except ImportError:
        raise BrokerUnavailable(
            "broker: mt5 needs the MetaTrader5 package, which exists for Windows only "
            "(pip install 'fxflow[mt5]' there); elsewhere use broker: mt5linux and mt5linux's RPyC bridge"
        ) from None


class ModuleTerminal:
    """The MetaTrader5 package (or any module with its API) called in this process."""

    def __init__(self, module: Any | None = None) -> None:
        self.module = module if module is not None else load_metatrader5()

    def call(self, function: str, *args: Any, **kwargs: Any) -> Any:
        return plain(getattr(self.module, function)(*args, **kwargs))

    def close(self) -> None:
        pass


class RpycTerminal:
    """mt5linux's bridge: an RPyC classic server whose ``import MetaTrader5`` is the real package."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._conn: Any = None

    def _connect(self) -> Any:
        try:
            import rpyc
        except ImportError:
            raise BrokerUnavailable("broker: mt5linux needs rpyc: pip install 'fxflow[mt5]'") from None
        try:
            conn = rpyc.classic.connect(self.host, self.port)
            conn._config["sync_request_timeout"] = self.timeout_s
            conn.execute("import MetaTrader5 as mt5")
            conn.execute(PLAIN_SOURCE)
        except (OSError, EOFError) as exc:
            raise BrokerUnavailable(f"mt5linux bridge {self.host}:{self.port}: {type(exc).__name__}: {exc}") from None
        return conn

    def call(self, function: str, *args: Any, **kwargs: Any) -> Any:
        import rpyc

        if self._conn is None:
            self._conn = self._connect()
        code = f"_fxflow_plain(mt5.{function}(*{args!r}, **{kwargs!r}))"
        try:
            return rpyc.classic.obtain(self._conn.eval(code))
        except (OSError, EOFError, rpyc.AsyncResultTimeout) as exc:
            self.close()
            raise BrokerUnavailable(f"mt5linux bridge {self.host}:{self.port}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
                pass
