"""``fxrun infra up|status|down``: the live profile's servers on this machine, without Docker.

``up`` starts NATS (JetStream), an S3-compatible object store, tansu (Kafka protocol, its data
in that store), PostgreSQL and Redis as daemons that outlive the command, records them in
``<data-dir>/state.json`` (0600: it holds the PostgreSQL password) and prints
``export FXFLOW_…=…`` lines, so ``eval "$(fxrun infra up)"`` points ``fxrun topology=live`` at
them. ``down`` stops them.

Each command looks at what really runs: a recorded server counts as running only while its pid
is alive, is still the process that was started (start time and command line, so a reused pid
is not mistaken for it) and its port accepts connections. ``up`` starts again, on the recorded
port with the same data and credentials, every server that is not running, and keeps the
others; ``down`` stops what runs, also a server of ours found listening on its port under
another pid.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from framework.errors import UserError
from framework.infra.servers import (
    LOCALHOST,
    KafkaServer,
    LocalServer,
    NatsServer,
    ObjectStoreServer,
    PostgresServer,
    RedisServer,
    ServerError,
    ServerUnavailable,
    group_alive,
    listening_pids,
    pid_alive,
    port_accepts,
    port_is_free,
    process_cmdline,
    process_start_ticks,
    stop_group,
    stop_pid,
)

DEFAULT_DIR = Path(".fxrun") / "infra"
STATE_FILE = "state.json"
PASSWORD_FILE = "postgres.password"

RUNNING = "running"
STOPPED = "stopped"
NOT_ANSWERING = "not answering"
PORT_TAKEN = "port taken"


@dataclass(frozen=True)
class Kind:
    cls: type[LocalServer]
    default_port: int | None
    env: str | None
    """The variable ``up`` exports the server's url in; None for a server only other servers use."""


KINDS: dict[str, Kind] = {
    "nats": Kind(NatsServer, 4222, "FXFLOW_NATS_URL"),
    "objectstore": Kind(ObjectStoreServer, None, None),
    "kafka": Kind(KafkaServer, 9092, "FXFLOW_KAFKA_BOOTSTRAP"),
    "postgres": Kind(PostgresServer, 5432, "FXFLOW_POSTGRES_URL"),
    "redis": Kind(RedisServer, 6379, "FXFLOW_REDIS_URL"),
}
"""In start order: tansu keeps its data in the object store, so the store comes up first."""


@dataclass(frozen=True)
class Record:
    """One daemonized server as ``state.json`` keeps it."""

    name: str
    pid: int
    start_ticks: int | None
    port: int
    url: str
    log: str
    stop_signal: int
    identity: list[str] = field(default_factory=list)
    """Words its command line contains (:meth:`LocalServer.identity`)."""

    def is_ours(self, pid: int) -> bool:
        """``pid`` runs this server's program on this server's port."""
        if not pid_alive(pid):
            return False
        cmdline = process_cmdline(pid)
        return cmdline is None or all(word in cmdline for word in self.identity)

    def alive(self) -> bool:
        """The recorded process still runs (and is not another process that reused the pid)."""
        if not self.is_ours(self.pid):
            return False
        return self.start_ticks is None or process_start_ticks(self.pid) == self.start_ticks

    def masked_url(self) -> str:
        if "@" not in self.url or "://" not in self.url:
            return self.url
        scheme, rest = self.url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


@dataclass(frozen=True)
class Probe:
    """What runs for a record: its ``state``, our server's ``pid`` if one runs, the pid of another process on its port."""

    state: str
    pid: int | None = None
    other: int | None = None


def probe(record: Record) -> Probe:
    """Look at the process and the port, not at what ``state.json`` says."""
    accepts = port_accepts(record.port)
    if record.alive():
        return Probe(RUNNING if accepts else NOT_ANSWERING, record.pid)
    if not accepts:
        return Probe(STOPPED)
    listeners = listening_pids(record.port)
    ours = [pid for pid in listeners if record.identity and record.is_ours(pid)]
    if ours:
        return Probe(RUNNING, ours[0])
    return Probe(PORT_TAKEN, other=listeners[0] if listeners else None)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


def read_state(data_dir: Path) -> list[Record]:
    path = data_dir / STATE_FILE
    if not path.is_file():
        return []
    try:
        raw = json.loads(path.read_text())
        records = [Record(**item) for item in raw["servers"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable infra state ({exc}); stop the servers by hand and delete it") from None
    order = list(KINDS)
    return sorted(records, key=lambda r: order.index(r.name) if r.name in order else len(order))


def _write_state(data_dir: Path, records: list[Record]) -> None:
    payload = {"created": time.time(), "servers": [asdict(r) for r in records]}
    _write_private(data_dir / STATE_FILE, json.dumps(payload, indent=2) + "\n")


def _postgres_password(data_dir: Path) -> str | None:
    """The password kept beside the cluster, so the URL survives ``down``/``up``."""
    path = data_dir / "postgres" / PASSWORD_FILE
    return path.read_text().strip() if path.is_file() else None


NATS_USER = "fxflow"
NATS_CREDENTIALS = "nats.password"
NATS_ENV = ("NATS_USER", "NATS_PASSWORD")
"""The variables topology/services.yaml names under ``nats.auth``."""


def _nats_password(data_dir: Path) -> str:
    """Generated once and kept (0600), so clients configured earlier keep working after down/up."""
    path = data_dir / "nats" / NATS_CREDENTIALS
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    _write_private(path, password + "\n")
    return password


def exports(records: list[Record], data_dir: Path | None = None) -> list[str]:
    by_name = {r.name: r for r in records}
    lines = [
        f"export {kind.env}={shlex.quote(by_name[name].url)}"
        for name, kind in KINDS.items()
        if kind.env and name in by_name
    ]
    if data_dir is not None and "nats" in by_name:
        user_env, password_env = NATS_ENV
        lines += [f"export {user_env}={NATS_USER}", f"export {password_env}={shlex.quote(_nats_password(data_dir))}"]
    return lines


def _server(name: str, data_dir: Path, port: int | None, records: dict[str, Record]) -> LocalServer:
    extra: dict[str, Any] = {}
    if name == "postgres":
        extra["password"] = _postgres_password(data_dir)
    elif name == "nats":
        extra.update(user=NATS_USER, password=_nats_password(data_dir))
    elif name == "kafka":
        extra["object_store"] = records["objectstore"].url
    return KINDS[name].cls(data_dir / name, port=port, daemon=True, **extra)


def _record(server: LocalServer, pid: int) -> Record:
    return Record(
        name=server.name,
        pid=pid,
        start_ticks=process_start_ticks(pid),
        port=server.port,
        url=server.url,
        log=str(server.log_path),
        stop_signal=int(server.stop_signal),
        identity=server.identity(),
    )


def _reap_orphans(record: Record) -> None:
    """Stop what is left of a crashed server's process group (children that outlived it).

    A pgid stays taken while its group has members, so a dead leader with a live group
    means the members are that server's.
    """
    if not pid_alive(record.pid) and group_alive(record.pid):
        stop_group(record.pid, record.stop_signal, timeout=5)


def _start_failed(name: str, server: LocalServer, exc: ServerError) -> UserError:
    reason = str(exc).split("; last lines of", 1)[0].splitlines()[0]
    return UserError(
        f"{name} did not start: {reason}; see {server.log_path}, then run `fxrun infra up` again "
        "(the servers that run are kept)"
    )


def _clear_for_restart(record: Record, seen: Probe) -> None:
    """Stop our server that does not answer and its leftovers; refuse if another program has the port."""
    if seen.state == PORT_TAKEN:
        who = f" (pid {seen.other})" if seen.other else ""
        raise UserError(
            f"{record.name}: its port {LOCALHOST}:{record.port} is taken by another process{who}; "
            "stop that process and run `fxrun infra up` again, or `fxrun infra down` then `fxrun infra up` for new ports"
        )
    if seen.pid is not None:
        stop_pid(seen.pid, record.stop_signal)
    _reap_orphans(record)


def up(data_dir: Path, *, any_port: bool = False) -> list[Record]:
    """Start every server that does not run, keep those that do; the caller prints :func:`exports`.

    A server that ran before comes back on its recorded port, with its data and credentials.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    records = {r.name: r for r in read_state(data_dir)}
    before = dict(records)
    try:
        for name, kind in KINDS.items():
            record = records.get(name)
            if record is None:
                free = kind.default_port is not None and port_is_free(kind.default_port)
                port = kind.default_port if free and not any_port else None
                print(f"starting {name}…", file=sys.stderr, flush=True)
            else:
                seen = probe(record)
                if seen.state == RUNNING:
                    if seen.pid != record.pid:
                        records[name] = replace(record, pid=seen.pid, start_ticks=process_start_ticks(seen.pid))
                    continue
                _clear_for_restart(record, seen)
                port = record.port
                print(f"starting {name} again on port {port} (it was {seen.state})…", file=sys.stderr, flush=True)
            try:
                server = _server(name, data_dir, port, records)
            except ServerUnavailable as exc:
                raise UserError(f"{name}: {exc}") from None
            try:
                server.start()
            except ServerError as exc:
                raise _start_failed(name, server, exc) from None
            if isinstance(server, PostgresServer):
                _write_private(server.data_dir / PASSWORD_FILE, server.password + "\n")
            records[name] = _record(server, server.detach())
            _write_state(data_dir, _in_order(records))
    finally:
        if records != before:
            _write_state(data_dir, _in_order(records))
    return _in_order(records)


def _in_order(records: dict[str, Record]) -> list[Record]:
    return [records[name] for name in KINDS if name in records]


def status(data_dir: Path) -> list[tuple[Record, Probe]]:
    records = read_state(data_dir)
    if not records:
        raise UserError(f"no infra state in {data_dir}: run `fxrun infra up` first")
    return [(record, probe(record)) for record in records]


def down(data_dir: Path) -> list[str]:
    """Stop what runs (gracefully, then SIGKILL), newest first, remove the state; one line per server."""
    report = []
    for record in reversed(read_state(data_dir)):
        seen = probe(record)
        if seen.pid is not None:
            graceful = stop_pid(seen.pid, record.stop_signal)
            report.append(f"stopped {record.name} (pid {seen.pid})" + ("" if graceful else ", killed after the timeout"))
        else:
            report.append(f"{record.name} was not running (pid {record.pid} had exited)")
        _reap_orphans(record)
        if seen.state == PORT_TAKEN:
            who = f"pid {seen.other}" if seen.other else "another process"
            report.append(f"{record.name}: port {record.port} is used by {who}, not by fxrun infra; left alone")
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    return report


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fxrun infra", description="Local NATS, Kafka (tansu and its object store), PostgreSQL and Redis."
    )
    parser.add_argument("action", choices=["up", "status", "down"])
    parser.add_argument("--data-dir", default=str(DEFAULT_DIR), help=f"servers' data and logs (default: {DEFAULT_DIR})")
    parser.add_argument("--any-port", action="store_true", help="free ports instead of 4222/9092/5432/6379")
    args = parser.parse_args(list(argv))
    data_dir = Path(args.data_dir).resolve()
    if args.action == "up":
        records = up(data_dir, any_port=args.any_port)
        print(f"infra running; data and logs under {data_dir}/ (`fxrun infra down` stops it)", file=sys.stderr)
        for line in exports(records, data_dir):
            print(line)
        return 0
    if args.action == "status":
        rows = status(data_dir)
        for record, seen in rows:
            if seen.pid is not None:
                pid = f"pid {seen.pid}"
            elif seen.state == PORT_TAKEN:
                pid = f"by pid {seen.other}" if seen.other else "by another process"
            else:
                pid = "-"
            print(f"{record.name:11} {seen.state:13} {pid:<13} {record.masked_url()}")
        if any(seen.state != RUNNING for _, seen in rows):
            print("some servers do not run: `fxrun infra up` starts them again", file=sys.stderr)
            return 1
        return 0
    if not (data_dir / STATE_FILE).is_file():
        print(f"no infra running in {data_dir}", file=sys.stderr)
        return 0
    for line in down(data_dir):
        print(line, file=sys.stderr)
    return 0
