"""Serving an ASGI application from a node (``role: server``): uvicorn in the run's own event loop.

A server node builds its application (Starlette, or any ASGI callable), starts an
:class:`AsgiServer` in ``on_start`` (so a port that cannot be bound is a start failure, and
the URL is known at once), and closes it in ``on_stop``. The server shares the loop with the
other nodes: handlers that feed it must not wait on a client (put a bounded buffer between
them, see :mod:`framework.runtime.buffering`).

The run owns the process's signals: uvicorn's own Ctrl-C handling is left out, so a Ctrl-C
stops the whole run (and this server with it) as it stops any other. Needs the ``web`` extra
(``pip install 'fxflow[web]'``: uvicorn and websockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import socket
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("fxflow.asgi")

_QUIET = ("uvicorn", "uvicorn.error", "uvicorn.access")


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class AsgiServer:
    """``app`` served on ``host:port`` (port 0: any free one) until :meth:`close`.

    With ``fallback`` a port another program holds is replaced by a free one (logged), so
    two runs on one machine do not fail each other; ``port`` tells which was bound.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fallback: bool = False,
        name: str = "server",
        ws_max_size: int = 64 * 1024,
        graceful_s: float = 2.0,
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.fallback = fallback
        self.name = name
        self.ws_max_size = ws_max_size
        self.graceful_s = graceful_s
        self.port: int | None = None
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _socket(self) -> socket.socket:
        try:
            return _bind(self.host, self.requested_port)
        except OSError as exc:
            if not (self.fallback and exc.errno == errno.EADDRINUSE and self.requested_port):
                raise
            sock = _bind(self.host, 0)
            log.warning(
                "%s: port %d is taken, serving on %d instead", self.name, self.requested_port, sock.getsockname()[1]
            )
            return sock

    async def start(self) -> None:
        """Bind and start accepting connections (OSError when the address cannot be bound)."""
        import uvicorn

        for name in _QUIET:  # its start/stop chatter; warnings and errors still show
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.WARNING)
        sock = self._socket()
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,  # the run's logging stays as it is
            access_log=False,
            lifespan="off",
            server_header=False,
            proxy_headers=False,
            ws_max_size=self.ws_max_size,
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            timeout_graceful_shutdown=max(1, int(self.graceful_s)),
        )
        server = self._server = _server_class()(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{self.name}.asgi")
        while not server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # its exception, if it failed
                raise OSError(f"{self.name}: the server stopped while starting")
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        """Stop accepting, close open connections (WebSockets get 1012), wait at most ``graceful_s``."""
        server, task, self._task = self._server, self._task, None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=self.graceful_s + 1.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except Exception as exc:
            log.warning("%s: server stopped with %s: %s", self.name, type(exc).__name__, exc)

    async def wait_closed(self) -> None:
        """Until the server stops (closed, or failed)."""
        if self._task is not None:
            await asyncio.shield(self._task)


@functools.lru_cache(maxsize=1)
def _server_class() -> type:
    """uvicorn's server without its signal handling, imported when a server starts (not with this module)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """The run owns SIGINT and SIGTERM (uvicorn would take them over and re-raise them)."""
            yield

    return Server

