"""``fxrun infra up|status|down``: the live profile's servers on this machine, without Docker.

``up`` starts NATS (JetStream), tansu (Kafka protocol, in-memory), PostgreSQL and Redis as
daemons that outlive the command, records them in ``<data-dir>/state.json`` (0600: it holds
the PostgreSQL password) and prints ``export FXFLOW_…=…`` lines, so
``eval "$(fxrun infra up)"`` points ``fxrun topology=live`` at them. ``down`` stops them.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from framework.errors import UserError
from framework.infra.servers import (
    KafkaServer,
    LocalServer,
    NatsServer,
    PostgresServer,
    RedisServer,
    ServerError,
    pid_alive,
    port_accepts,
    port_is_free,
    process_start_ticks,
    stop_group,
)

DEFAULT_DIR = Path(".fxrun") / "infra"
STATE_FILE = "state.json"
PASSWORD_FILE = "postgres.password"


@dataclass(frozen=True)
class Kind:
    cls: type[LocalServer]
    default_port: int
    env: str


KINDS: dict[str, Kind] = {
    "nats": Kind(NatsServer, 4222, "FXFLOW_NATS_URL"),
    "kafka": Kind(KafkaServer, 9092, "FXFLOW_KAFKA_BOOTSTRAP"),
    "postgres": Kind(PostgresServer, 5432, "FXFLOW_POSTGRES_URL"),
    "redis": Kind(RedisServer, 6379, "FXFLOW_REDIS_URL"),
}


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

    def alive(self) -> bool:
        """The recorded process still runs (and is not another process that reused the pid)."""
        if not pid_alive(self.pid):
            return False
        return self.start_ticks is None or process_start_ticks(self.pid) == self.start_ticks

    def masked_url(self) -> str:
        if "@" not in self.url or "://" not in self.url:
            return self.url
        scheme, rest = self.url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


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
        return [Record(**item) for item in raw["servers"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable infra state ({exc}); stop the servers by hand and delete it") from None


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
    lines = [f"export {KINDS[name].env}={shlex.quote(by_name[name].url)}" for name in KINDS if name in by_name]
    if data_dir is not None and "nats" in by_name:
        user_env, password_env = NATS_ENV
        lines += [f"export {user_env}={NATS_USER}", f"export {password_env}={shlex.quote(_nats_password(data_dir))}"]
    return lines


def up(data_dir: Path, *, any_port: bool = False) -> list[Record]:
    """Start every server not already running; the caller prints :func:`exports`."""
    existing = read_state(data_dir)
    if existing and all(r.alive() for r in existing) and {r.name for r in existing} == set(KINDS):
        return existing
    if any(r.alive() for r in existing):
        running = ", ".join(r.name for r in existing if r.alive())
        raise UserError(f"{data_dir}: some servers still run ({running}) but not all: run `fxrun infra down` first")
    data_dir.mkdir(parents=True, exist_ok=True)
    started: list[LocalServer] = []
    try:
        for name, kind in KINDS.items():
            port = None if any_port or not port_is_free(kind.default_port) else kind.default_port
            extra: dict[str, Any] = {}
            if kind.cls is PostgresServer:
                extra["password"] = _postgres_password(data_dir)
            if kind.cls is NatsServer:
                extra.update(user=NATS_USER, password=_nats_password(data_dir))
            server = kind.cls(data_dir / name, port=port, daemon=True, **extra)
            print(f"starting {name}…", file=sys.stderr, flush=True)
            server.start()
            started.append(server)
            if isinstance(server, PostgresServer):
                _write_private(server.data_dir / PASSWORD_FILE, server.password + "\n")
    except ServerError as exc:
        for server in started:
            server.stop()
        raise UserError(str(exc)) from None
    records = []
    for server in started:
        pid = server.detach()
        records.append(
            Record(
                name=server.name,
                pid=pid,
                start_ticks=process_start_ticks(pid),
                port=server.port,
                url=server.url,
                log=str(server.log_path),
                stop_signal=int(server.stop_signal),
            )
        )
    _write_state(data_dir, records)
    return records


def status(data_dir: Path) -> list[tuple[Record, str]]:
    records = read_state(data_dir)
    if not records:
        raise UserError(f"no infra state in {data_dir}: run `fxrun infra up` first")
    result = []
    for record in records:
        if not record.alive():
            state = "stopped"
        elif port_accepts(record.port):
            state = "running"
        else:
            state = "not answering"
        result.append((record, state))
    return result


def down(data_dir: Path) -> list[Record]:
    """Stop every recorded server (gracefully, then SIGKILL) and remove the state."""
    records = read_state(data_dir)
    for record in records:
        if record.alive():
            stop_group(record.pid, record.stop_signal)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    return records


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="fxrun infra", description="Local NATS, Kafka (tansu), PostgreSQL and Redis.")
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
        for record, state in rows:
            print(f"{record.name:9} {state:14} pid {record.pid:<8} {record.masked_url()}")
        return 0 if all(state == "running" for _, state in rows) else 1
    records = down(data_dir)
    if not records:
        print(f"no infra running in {data_dir}", file=sys.stderr)
    for record in records:
        print(f"stopped {record.name} (pid {record.pid})", file=sys.stderr)
    return 0
