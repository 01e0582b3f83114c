"""``fxrun models list | show ID | promote ID`` by subprocess, on an artifact store holding trained models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework.offline import open_offline
from framework.testing import load, query
from nodes.ml.command import main
from nodes.supervised_training import worker
from nodes.supervised_training.synthetic import bars_and_features

ROOT = Path(__file__).resolve().parents[1]
FXRUN = Path(sys.executable).parent / "fxrun"
T0 = 1_793_577_600_000
M = 60_000


def fxrun(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FXRUN), "models", *args, f"data_dir={data_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=120)


def inline(data_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The verb in this process (a subprocess costs seconds of start-up on a shared machine)."""
    code = main([*args, f"data_dir={data_dir}"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions of `sig` (v1 promoted), an xgboost `other`, and `broken` whose card lacks its features."""
    import asyncio

    data_dir = tmp_path_factory.mktemp("models")
    bars, rows = bars_and_features(["EURUSD"], start_ms=T0, n=200, momentum=0.5)

    def trained(kind: str, seed: int, name: str) -> worker.Final:
        job = worker.Job(name=name, kind=kind, timeframe="1m", symbols=("EURUSD",), target={"kind": "direction", "horizon": "2m"},
                         model_params={"n_estimators": 5}, threshold=0.5, folds={"n": 2, "min_train": 30, "min_test": 10}, seed=seed,
                         window_start=T0, cut=T0 + 200 * M, run_id=f"{name}-{seed}")  # fmt: skip
        return worker.train(job, rows, bars)[0]

    async def fill() -> None:
        loaded = load(data_dir)
        async with open_offline(loaded.topology, data_dir, ["model_promotions"]) as offline:
            artifacts = offline.artifacts
            assert artifacts is not None
            first = trained("lightgbm", 1, "sig")
            v1 = await artifacts.put("sig", first.data, kind="lightgbm", metadata=first.card)
            await artifacts.tag(v1, "sig@promoted", metadata={"promoted_from": "sig:1"})
            second = trained("lightgbm", 2, "sig")
            await artifacts.put("sig", second.data, kind="lightgbm", metadata=second.card)
            other = trained("xgboost", 1, "other")
            await artifacts.put("other", other.data, kind="xgboost", metadata=other.card)
            await artifacts.put("broken", b"not a model", kind="xgboost", metadata={"kind": "xgboost"})

    asyncio.run(fill())
    return data_dir


def test_list_shows_every_model_version_and_which_is_promoted(store: Path) -> None:
    out = fxrun(store, "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:5] == ["ID", "SHA256", "KIND", "FEATURE", "SET"] and lines[0].split()[-1] == "PROMOTED"
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == ["broken:1", "other:1", "sig:1", "sig:2"]
    assert rows["sig:1"][-1] == "yes" and rows["sig:2"][-1] != "yes"
    assert rows["sig:2"][2:4] == ["lightgbm", "synthetic-v1"] and rows["other:1"][2] == "xgboost"
    assert rows["broken:1"][3] == "?"


def test_show_prints_the_card(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = fxrun(store, "show", "sig:2")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "model      sig:2" in text and "promoted   no (promoted now: sig:1)" in text
    assert "run        sig-2" in text and "features   synthetic-v1: 4 (r1, r3, r6, vol10)" in text
    assert "data       EURUSD 1m, 2026-11-02T00:" in text and "seed 2" in text
    assert "balanced_accuracy" in text
    sha = next(line.split()[1] for line in text.splitlines() if line.startswith("sha256"))
    code, text, _ = inline(store, capsys, "show", sha[:8])
    assert code == 0 and "model      sig:2" in text
    code, text, _ = inline(store, capsys, "show", "sig")
    assert code == 0 and "model      sig:2" in text  # a name alone: its latest version


def test_promote_tags_the_model_records_the_decision_and_refuses_what_it_cannot_trust(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = fxrun(store, "promote", "sig:2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "model sig:2 promoted: promoted by hand, replacing sig:1"
    listed = {line.split()[0]: line.split()[-1] for line in inline(store, capsys, "list")[1].splitlines()[1:]}
    assert listed["sig:2"] == "yes" and listed["sig:1"] != "yes"
    assert inline(store, capsys, "promote", "sig:2")[1].strip() == "model sig:2 is already the promoted one"
    import asyncio

    rows = asyncio.run(query(store, "SELECT name, version, decision, by FROM model_promotions"))
    assert rows == [{"name": "sig", "version": 2, "decision": "promoted", "by": "fxrun models promote"}]

    broken = fxrun(store, "promote", "broken:1")
    assert broken.returncode == 1
    assert broken.stderr.strip() == "fxrun models: model broken:1 has an unreadable card (model card lacks feature_set, features, timeframe, symbols); refused"
    code, text, _ = inline(store, capsys, "show", "broken:1")
    assert code == 0 and "card       unreadable" in text

    other_sha = next(line.split()[1] for line in inline(store, capsys, "show", "other:1")[1].splitlines() if line.startswith("sha256"))
    blob = store / "artifacts" / "sha256" / other_sha[:2] / other_sha
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes() + b"tampered")
    corrupt = fxrun(store, "promote", "other:1")
    assert corrupt.returncode == 1 and "expected " + other_sha in corrupt.stderr and "refused" in corrupt.stderr
    assert len(corrupt.stderr.strip().splitlines()) == 1


def test_unknown_ids_and_usage_mistakes_are_one_line(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = inline(store, capsys, "show", "sig:9")
    assert code == 1 and err.strip() == "fxrun models: artifact 'sig' has no version 9 in store 'artifacts' (it has v1, v2)"
    code, _, err = inline(store, capsys, "promote", "abcdef12")
    assert code == 1 and err.strip().startswith("fxrun models: no model has a sha256 starting abcdef12 (models: broken:1, other:1, sig:1, sig:2")
    usage = fxrun(store, "show")
    assert usage.returncode == 2 and usage.stderr.strip() == "fxrun models: the following arguments are required: id (see fxrun models --help)"
    code, out, _ = inline(store.parent / "nothing-here", capsys, "list")
    assert code == 0 and out.startswith("no model in ")
