"""The fake MT5 bridge: an RPyC classic server, as mt5linux runs, whose ``import MetaTrader5`` is the fake.

``python -m tests.fake_mt5.server [PORT]`` prints the port it listens on (127.0.0.1; 0 or none:
a free one) and serves until killed. :class:`FakeMt5` starts it for a test and reaches the
fake's controls over a second RPyC connection, the same protocol the client speaks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> None:
    from rpyc.core import SlaveService
    from rpyc.utils.server import ThreadedServer

    from tests.fake_mt5 import terminal

    sys.modules["MetaTrader5"] = terminal

    class Server(ThreadedServer):
        def _authenticate_and_serve_client(self, sock: Any) -> None:
            terminal._fake.local.sock = sock  # each client is served on its own thread: drop() cuts this one
            super()._authenticate_and_serve_client(sock)

    port = int(argv[0]) if argv else 0
    server = Server(SlaveService, hostname="127.0.0.1", port=port, reuse_addr=True,
                    protocol_config={"allow_all_attrs": True, "allow_pickle": True, "sync_request_timeout": 30})  # fmt: skip
    terminal._fake.server = server
    server._listen()  # listening before the port is announced (start() would listen too late for a fast client)
    print(server.port, flush=True)
    server.start()


class FakeMt5:
    """A fake bridge in a child process, and its controls (``.fake``: the ``Fake`` object, remotely)."""

    def __init__(self, port: int = 0) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fake_mt5.server", str(port)], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.strip():
            raise RuntimeError(f"the fake MT5 server did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.port = int(line)
        self._ctl: Any = None
        self._lock = threading.Lock()

    @property
    def fake(self) -> Any:
        import rpyc

        with self._lock:
            if self._ctl is None or self._ctl.closed:
                self._ctl = rpyc.classic.connect("127.0.0.1", self.port)
            return self._ctl.modules["MetaTrader5"]._fake

    def stop(self) -> None:
        if self._ctl is not None:
            try:
                self._ctl.close()
            except Exception:  # noqa: BLE001
                pass
        self.proc.kill()
        self.proc.wait(10)


if __name__ == "__main__":
    main(sys.argv[1:])
