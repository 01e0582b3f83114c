"""The artifact store (framework/artifacts.py): content-addressed blobs, verified loads, versions by name,
atomic writes (a SIGKILLed writer leaves no blob under a hash), and the metadata table in the real
embedded ClickHouse declared by the topology."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from framework.artifacts import (
    METADATA_COLUMNS,
    STALE_PART_S,
    ArtifactCorrupt,
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    LocalBlobs,
    StoreTable,
    files_stores,
    metadata_table_name,
    metadata_table_problem,
)
from framework.clock import SimulatedClock
from framework.stores.base import StoreError, open_store
from framework.stores.clickhouse import ClickHouseStore
from framework.testing import load
from framework.topology.model import StoreConfig

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_793_000_000_000


class FakeTable:
    """The metadata table's two operations; JSON is stored as text, as ClickHouse returns it."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.rows += [{**row, "metadata": orjson.dumps(row["metadata"]).decode()} for row in rows]

    async def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        assert "{table}" in sql
        return [dict(r) for r in self.rows if all(r[k] == v for k, v in (parameters or {}).items())]


class StepClock:
    def __init__(self) -> None:
        self.now = T0

    def now_ms(self) -> int:
        self.now += 1000
        return self.now


@pytest.fixture
def table() -> FakeTable:
    return FakeTable()


@pytest.fixture
def store(tmp_path: Path, table: FakeTable) -> ArtifactStore:
    return ArtifactStore(LocalBlobs(tmp_path / "blobs"), table, StepClock(), service="trainer")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_file(root: Path, digest: str) -> Path:
    return root / "sha256" / digest[:2] / digest


async def test_put_then_get_by_name_sha_and_ref(store: ArtifactStore, tmp_path: Path) -> None:
    data = b"xgboost model bytes"
    meta = {"feature_set": "v3", "window": [T0 - 86_400_000, T0], "params": {"depth": 6}}
    ref = await store.put("xgb-EURUSD-1h", data, kind="xgboost", metadata=meta)
    assert (ref.name, ref.version, ref.sha256, ref.kind, ref.size) == ("xgb-EURUSD-1h", 1, sha(data), "xgboost", len(data))
    assert ref.metadata == meta and ref.service == "trainer" and ref.ts == T0 + 1000
    assert await store.get("xgb-EURUSD-1h") == data
    assert await store.get(ref.sha256) == data
    assert await store.get(ref) == data
    assert await store.resolve(ref.sha256) == ref == await store.latest("xgb-EURUSD-1h")
    stored = blob_file(tmp_path / "blobs", ref.sha256)
    assert stored.read_bytes() == data
    assert stored.stat().st_mode & 0o777 == 0o444
    assert not list((tmp_path / "blobs" / "tmp").iterdir())


async def test_an_artifact_with_a_wrong_hash_is_refused_with_a_clear_error(store: ArtifactStore, tmp_path: Path) -> None:
    data = b"A" * 10_000
    ref = await store.put("ppo-EURUSD", data, kind="sb3-ppo")
    stored = blob_file(tmp_path / "blobs", ref.sha256)
    assert await store.path(ref) == stored  # verified once, while intact
    stored.chmod(0o644)
    with stored.open("r+b") as f:
        f.seek(5000)
        f.write(b"B")
    actual = sha(stored.read_bytes())
    for load_it in (store.get, store.path):
        with pytest.raises(ArtifactCorrupt) as caught:
            await load_it("ppo-EURUSD")
        message = str(caught.value)
        assert "\n" not in message
        assert f"expected {ref.sha256}" in message and f"sha256 {actual}" in message
        assert str(stored) in message and "'ppo-EURUSD' v1" in message
    again = await store.put("ppo-EURUSD", data, kind="sb3-ppo")  # putting the content again repairs the blob
    assert again == ref
    assert await store.get("ppo-EURUSD") == data


async def test_a_missing_artifact_names_what_was_asked_and_what_exists(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFound, match=r"no artifact named 'xgb' in store 'artifacts' \(it holds no artifact yet\)"):
        await store.get("xgb")
    for n in range(3):
        await store.put("xgb-EURUSD-1h", f"model {n}".encode(), kind="xgboost")
    await store.put("ppo-EURUSD", b"agent", kind="sb3-ppo")
    with pytest.raises(ArtifactNotFound) as caught:
        await store.get("xgb-EURUSD-1m")
    assert str(caught.value) == (
        "no artifact named 'xgb-EURUSD-1m' in store 'artifacts' "
        "(it holds ppo-EURUSD (v1), xgb-EURUSD-1h (v1-v3); did you mean 'xgb-EURUSD-1h'?)"
    )
    with pytest.raises(ArtifactNotFound, match=r"artifact 'xgb-EURUSD-1h' has no version 7 in store 'artifacts' \(it has v1-v3\)"):
        await store.path("xgb-EURUSD-1h", version=7)
    unknown = sha(b"never stored")
    with pytest.raises(ArtifactNotFound, match=rf"no artifact has sha256 {unknown} in store 'artifacts' \(it holds ppo-EURUSD"):
        await store.get(unknown)


async def test_a_missing_blob_is_named_and_never_returned(store: ArtifactStore, tmp_path: Path) -> None:
    ref = await store.put("scaler", b"scaler", kind="sklearn")
    blob_file(tmp_path / "blobs", ref.sha256).unlink()
    with pytest.raises(ArtifactNotFound, match=r"artifact 'scaler' v1 \(sha256 [0-9a-f]{12}…\): its blob is missing \(/"):
        await store.get("scaler")


async def test_versions_latest_and_a_retried_put_adds_nothing(store: ArtifactStore, table: FakeTable) -> None:
    one = await store.put("lgbm", b"one", kind="lightgbm", metadata={"window": [1, 2]})
    assert await store.put("lgbm", b"one", kind="lightgbm", metadata={"window": [1, 2]}) == one
    two = await store.put("lgbm", b"two", kind="lightgbm", metadata={"window": [2, 3]})
    three = await store.put("lgbm", b"one", kind="lightgbm", metadata={"window": [3, 4]})  # same blob, new metadata
    assert [one.version, two.version, three.version] == [1, 2, 3]
    assert len(table.rows) == 3
    assert await store.latest("lgbm") == three
    assert await store.get("lgbm", version=2) == b"two"
    assert (await store.resolve("lgbm", version=1)).metadata == {"window": [1, 2]}
    table.rows.append(dict(table.rows[1]))  # a row written twice (a retried insert) is listed once
    assert [r.version for r in await store.list(name="lgbm")] == [3, 2, 1]


async def test_concurrent_puts_of_one_name_get_distinct_versions(store: ArtifactStore) -> None:
    refs = await asyncio.gather(*(store.put("cat", f"m{n}".encode(), kind="catboost") for n in range(5)))
    assert sorted(r.version for r in refs) == [1, 2, 3, 4, 5]


async def test_list_by_kind_and_name_newest_first(store: ArtifactStore) -> None:
    a = await store.put("xgb-EURUSD-1h", b"a", kind="xgboost")
    b = await store.put("ppo-EURUSD", b"b", kind="sb3-ppo")
    c = await store.put("xgb-GBPUSD-1h", b"c", kind="xgboost")
    d = await store.put("xgb-EURUSD-1h", b"d", kind="xgboost")
    assert await store.list() == [d, c, b, a]
    assert await store.list(kind="xgboost") == [d, c, a]
    assert await store.list(name="xgb-EURUSD-1h") == [d, a]
    assert await store.list(kind="sb3-ppo", name="xgb-EURUSD-1h") == []


async def test_tag_promotes_a_version_without_copying_it(store: ArtifactStore, tmp_path: Path) -> None:
    v1 = await store.put("xgb", b"first", kind="xgboost", metadata={"feature_set": "v3"})
    await store.put("xgb", b"second", kind="xgboost", metadata={"feature_set": "v3"})
    promoted = await store.tag("xgb", "xgb@promoted", version=1, metadata={"by": "backtest 42"})
    assert (promoted.sha256, promoted.kind, promoted.version) == (v1.sha256, "xgboost", 1)
    assert promoted.metadata == {"feature_set": "v3", "by": "backtest 42"}
    assert await store.get("xgb@promoted") == b"first"
    assert len([p for p in (tmp_path / "blobs" / "sha256").rglob("*") if p.is_file()]) == 2


async def test_large_files_stream_from_a_path_and_load_as_a_verified_path(store: ArtifactStore, tmp_path: Path) -> None:
    size = 24 << 20
    source = tmp_path / "model.ubj"
    with source.open("wb") as f:
        for n in range(size >> 20):
            f.write(bytes([n]) * (1 << 20))
    tracemalloc.start()
    try:
        ref = await store.put("big", source, kind="xgboost")
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        path = await store.path("big", suffix=".ubj")
        _, path_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        data = await store.get("big")
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref.size == size and ref.sha256 == sha(source.read_bytes())
    assert put_peak < 4 << 20 and path_peak < 4 << 20  # chunks, never the whole file
    assert size <= get_peak < size * 1.5  # the bytes once, not twice
    assert data == source.read_bytes()
    assert path.name == f"{ref.sha256}.ubj" and path.read_bytes() == data
    assert os.path.samefile(path, blob_file(tmp_path / "blobs", ref.sha256))  # a link, not a copy
    with source.open("rb") as stream:
        assert (await store.put("big-from-a-stream", stream, kind="xgboost")).sha256 == ref.sha256


async def test_bad_input_is_one_line(store: ArtifactStore, tmp_path: Path) -> None:
    cases = [
        (store.put("m", tmp_path / "nope.bin", kind="x"), "no file '.*nope.bin' to store"),
        (store.put("m", 42, kind="x"), "cannot store a int"),  # type: ignore[arg-type]
        (store.put("", b"x", kind="x"), "artifact name must be a non-empty string"),
        (store.put(sha(b"x"), b"x", kind="x"), "looks like a sha256"),
        (store.put("m", b"x", kind="x", metadata={"t": object()}), "metadata of artifact 'm' is not JSON"),
        (store.path("m", suffix="ubj"), "suffix must look like '.json'"),
    ]
    for call, pattern in cases:
        with pytest.raises(ArtifactError, match=pattern) as caught:
            await call
        assert "\n" not in str(caught.value)
    assert not list((tmp_path / "blobs" / "tmp").iterdir())


_WRITER = """
import asyncio, sys
from framework.artifacts import ArtifactStore, LocalBlobs

class Table:
    async def insert(self, rows): pass
    async def query(self, sql, parameters=None): return []

asyncio.run(ArtifactStore(LocalBlobs(sys.argv[1]), Table()).put("big", sys.stdin.buffer, kind="test"))
"""


def test_a_writer_killed_mid_write_leaves_no_blob_under_a_hash(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], cwd=ROOT, stdin=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"x" * (3 << 20))
        proc.stdin.flush()
        deadline = time.time() + 60
        while time.time() < deadline and not any(p.stat().st_size >= 2 << 20 for p in (root / "tmp").glob("*.part")):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    parts = list((root / "tmp").glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size >= 2 << 20
    assert not (root / "sha256").exists() or not list((root / "sha256").rglob("*"))
    LocalBlobs(root)  # a part still being written (recently touched) is left alone
    assert parts[0].exists()
    old = time.time() - STALE_PART_S - 60
    os.utime(parts[0], (old, old))
    LocalBlobs(root)  # an abandoned one is removed
    assert not parts[0].exists()


# ---------------------------------------------------------------- the topology and the real ClickHouse


async def test_the_declared_store_and_metadata_table_in_embedded_clickhouse(tmp_path: Path) -> None:
    topology = load(tmp_path).topology
    assert list(files_stores(topology)) == ["artifacts"]
    config = topology.stores["artifacts"]
    assert metadata_table_problem(topology, "artifacts") is None
    table_name = metadata_table_name(config)
    declared = topology.tables[table_name]
    clickhouse = ClickHouseStore("clickhouse", topology.stores[declared.store].url)
    await clickhouse.connect()
    try:
        await clickhouse.ensure_table(table_name, declared, declared.columns or {})
        clock = SimulatedClock(T0)
        store = ArtifactStore.from_config("artifacts", config, StoreTable(clickhouse, table_name), clock, data_dir=tmp_path)
        trainer = store.for_service("supervised-training-service")
        meta = {"feature_set": "v3", "window": [T0 - 86_400_000, T0], "metrics": {"auc": 0.61}, "note": "é ü"}
        one = await trainer.put("xgb-EURUSD-1h", b"\x00model one\xff", kind="xgboost", metadata=meta)
        await clock.advance_to(T0 + 60_000)
        two = await trainer.put("xgb-EURUSD-1h", b"model two", kind="xgboost", metadata={**meta, "feature_set": "v4"})
        assert await trainer.put("xgb-EURUSD-1h", b"model two", kind="xgboost", metadata={**meta, "feature_set": "v4"}) == two
        await clickhouse.insert(table_name, [one.row()])  # a retried insert: listed once
        reader = ArtifactStore.from_config("artifacts", config, StoreTable(clickhouse, table_name), clock, data_dir=tmp_path)
        assert await reader.list(name="xgb-EURUSD-1h") == [two, one]
        assert (await reader.latest("xgb-EURUSD-1h")).metadata["feature_set"] == "v4"
        assert await reader.resolve("xgb-EURUSD-1h", version=1) == one
        assert one.metadata == meta and one.service == "supervised-training-service" and (one.ts, two.ts) == (T0, T0 + 60_000)
        assert await reader.get(one.sha256) == b"\x00model one\xff"
        assert (await reader.path(two)).is_relative_to(tmp_path / "artifacts" / "sha256")
        rows = await clickhouse.query(f"SELECT count() AS n FROM {table_name} FINAL")
        assert rows == [{"n": 2}]
    finally:
        await clickhouse.close()


def test_a_metadata_table_missing_columns_is_one_line(tmp_path: Path) -> None:
    topology = load(tmp_path, "~topology.tables.artifacts.columns.service").topology
    message = metadata_table_problem(topology, "artifacts")
    assert message is not None and "\n" not in message
    assert message.startswith("table 'artifacts' (artifact metadata of store 'artifacts') lacks columns service;")
    assert set(METADATA_COLUMNS) == set(load(tmp_path, profile="live").topology.tables["artifacts"].columns or {})


def test_a_table_in_a_files_store_is_refused_in_one_line(tmp_path: Path) -> None:
    config = StoreConfig(kind="files", url=f"file://{tmp_path}/artifacts")
    with pytest.raises(StoreError, match=r"^store 'artifacts' \(files\) holds artifacts, not tables"):
        open_store("artifacts", config, str(tmp_path))


# ---------------------------------------------------------------- fsspec URLs


def test_an_fsspec_url_without_fsspec_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)
    config = StoreConfig(kind="files", url="s3://models/fxflow", options={"table": "artifacts"})
    with pytest.raises(ArtifactError) as caught:
        ArtifactStore.from_config("artifacts", config, FakeTable(), data_dir=tmp_path)
    assert str(caught.value) == (
        "artifact store at s3://models/fxflow needs fsspec and its s3 backend: pip install fsspec (e.g. s3fs for s3://), "
        "or use a local directory (file://)"
    )


async def test_blobs_under_an_fsspec_url_are_verified_and_cached(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    url = f"memory://fxflow-test-{os.getpid()}-{time.time_ns()}/artifacts"
    config = StoreConfig(kind="files", url=url)
    store = ArtifactStore.from_config("artifacts", config, FakeTable(), StepClock(), data_dir=tmp_path)
    ref = await store.put("xgb", b"remote model", kind="xgboost")
    assert await store.get("xgb") == b"remote model"
    path = await store.path("xgb", suffix=".json")
    assert path.read_bytes() == b"remote model" and path.is_relative_to(tmp_path / "cache" / "artifacts")
    fs, root = fsspec.core.url_to_fs(url)
    remote = f"{root}/sha256/{ref.sha256[:2]}/{ref.sha256}"
    fs.pipe_file(remote, b"tampered model")
    with pytest.raises(ArtifactCorrupt, match=f"expected {ref.sha256}"):
        await store.get("xgb")
    for cached in (tmp_path / "cache" / "artifacts").rglob(ref.sha256):
        cached.chmod(0o644)
        cached.write_bytes(b"tampered copy")
    with pytest.raises(ArtifactCorrupt, match=f"memory://.*{ref.sha256}.* has sha256 {sha(b'tampered model')}"):
        await store.path("xgb")
