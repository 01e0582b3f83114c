"""``ctx.config_hash``: the resolved topology and pairs, hashed, the data directory left out (framework/confighash.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from framework.confighash import DATA_DIR, canonical, config_hash
from framework.testing import load, make_runtime

ROOT = Path(__file__).resolve().parents[1]


def test_the_same_configuration_in_two_directories_has_one_hash(tmp_path: Path) -> None:
    a, b = load(tmp_path / "a", "pairs=[EURUSD]"), load(tmp_path / "b", "pairs=[EURUSD]")
    assert config_hash(a.topology, ["EURUSD"], tmp_path / "a") == config_hash(b.topology, ["EURUSD"], tmp_path / "b")
    text = canonical(a.topology, ["EURUSD"], tmp_path / "a")
    assert str(tmp_path) not in text and f"chdb://{DATA_DIR}/clickhouse" in text
    assert hashlib.sha256(text.encode()).hexdigest() == config_hash(a.topology, ["EURUSD"], tmp_path / "a")
    assert json.loads(text)["pairs"] == ["EURUSD"] and text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_a_param_or_the_pairs_change_the_hash(tmp_path: Path) -> None:
    base = load(tmp_path, "pairs=[EURUSD]")
    other = load(tmp_path, "pairs=[EURUSD]", "topology.services.spread-watch.params.stats_every=5m")
    assert config_hash(base.topology, ["EURUSD"], tmp_path) != config_hash(other.topology, ["EURUSD"], tmp_path)
    assert config_hash(base.topology, ["EURUSD"], tmp_path) != config_hash(base.topology, ["EURUSD", "XAUUSD"], tmp_path)
    assert config_hash(base.topology, ["XAUUSD", "EURUSD"], tmp_path) == config_hash(base.topology, ["EURUSD", "XAUUSD"], tmp_path)


async def test_every_node_sees_the_runs_hash(tmp_path: Path) -> None:
    loaded = load(tmp_path, "pairs=[EURUSD]")
    rt = make_runtime(loaded, tmp_path, only=["spread-watch"])
    await rt.start()
    try:
        assert rt.hosts["spread-watch"].ctx.config_hash == rt.config_hash == config_hash(loaded.topology, ["EURUSD"], tmp_path)
    finally:
        await rt.stop()


def test_a_relative_data_dir_is_left_out_in_every_form(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    project = Path(__file__).resolve().parents[1]
    here, there = load(Path("runs/a"), "pairs=[EURUSD]", project=project), load(Path("runs/b"), "pairs=[EURUSD]", project=project)
    assert "${data_dir}" in canonical(here.topology, ["EURUSD"], Path("runs/a"))
    assert str(tmp_path) not in canonical(here.topology, ["EURUSD"], Path("runs/a"))
    assert config_hash(here.topology, ["EURUSD"], Path("runs/a")) == config_hash(there.topology, ["EURUSD"], (tmp_path / "runs/b"))


def test_the_code_is_part_of_the_configuration(tmp_path: Path) -> None:
    """A changed default of a node's params is a change of code, not of the topology: it must change the hash, or
    `fxrun backtest run` would hand back a result that other code computed."""
    from framework.confighash import code_identity, source_digest

    package = tmp_path / "plugin"
    (package / "sub").mkdir(parents=True)
    (package / "spec.py").write_text("SEED = 7\n")
    (package / "sub" / "x.py").write_text("pass\n")
    before = source_digest([package])
    assert source_digest([package]) == before
    (package / "spec.py").write_text("SEED = 8\n")
    assert source_digest([package]) != before
    (package / "spec.py").write_text("SEED = 7\n")
    (package / "sub" / "y.py").write_text("")
    assert source_digest([package]) != before
    loaded = load(tmp_path / "a")
    assert json.loads(canonical(loaded.topology, ["EURUSD"]))["code"] == code_identity()
    assert code_identity() != source_digest([ROOT / "framework"])  # the node plugins' code too
