"""The configuration hash is taken of what a run computes with: typed params as their node's params model reads them
(framework/confighash.py), so equivalent spellings of a time or a duration are one configuration and any other value another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from framework.confighash import canonical, config_hash
from framework.testing import load
from nodes.supervised_training.node import SupervisedTraining
from nodes.supervised_training.spec import SupervisedTrainingParams

ROOT = Path(__file__).resolve().parents[1]
ENGINE = "topology.services.backtesting-engine.params"
WATCH = "topology.services.spread-watch.params"


def _hash(data_dir: Path, *overrides: str, profile: str = "demo") -> str:
    loaded = load(data_dir, "pairs=[EURUSD]", *overrides, profile=profile)
    return config_hash(loaded.topology, ["EURUSD"], data_dir)


def _start(data_dir: Path, start: str) -> str:
    return _hash(data_dir, f"{ENGINE}.start={start}", f"{ENGINE}.end=2026-10-30T00:00Z", profile="backtest")


def _canonical(data_dir: Path, start: str) -> str:
    loaded = load(data_dir, "pairs=[EURUSD]", f"{ENGINE}.start={start}", f"{ENGINE}.end=2026-10-30T00:00Z", profile="backtest")
    doc = json.loads(canonical(loaded.topology, ["EURUSD"], data_dir))
    return json.dumps({k: v for k, v in doc.items() if k != "code"}, sort_keys=True)


def test_spellings_of_one_utc_time_have_one_hash_and_another_time_another(tmp_path: Path) -> None:
    """A time with no zone is UTC (``UtcTime``; every node reads it with ``framework.params.utc_ms``)."""
    base = _start(tmp_path, "2026-10-29T00:00:00Z")
    for spelling in ("2026-10-29T00:00Z", "2026-10-29T00:00:00+00:00", "2026-10-29T00:00:00.000Z", "2026-10-29T02:00:00+02:00",
                     "2026-10-29", "2026-10-29T00:00:00"):  # fmt: skip
        assert _start(tmp_path, spelling) == base, spelling
    for other in ("2026-10-29T00:00:01Z", "2026-10-29T00:00:00.001Z", "2026-10-29T00:00:00+01:00", "2026-10-30"):
        assert _start(tmp_path, other) != base, other


def test_spellings_of_one_duration_have_one_hash_and_another_duration_another(tmp_path: Path) -> None:
    hashes = {_hash(tmp_path, f"{WATCH}.stats_every={d}") for d in ("1h", "60m", "3600s", "3600000ms", "0.5h", "1.0h")}
    assert len(hashes) == 2  # 0.5h is 30 minutes
    assert _hash(tmp_path, f"{WATCH}.stats_every=0.5h") == _hash(tmp_path, f"{WATCH}.stats_every=30m")
    assert _hash(tmp_path, f"{WATCH}.stats_every=61m") != _hash(tmp_path, f"{WATCH}.stats_every=1h")


def test_a_default_written_out_is_the_default(tmp_path: Path) -> None:
    """spread-watch's stats_every defaults to 1m in its params model: writing it, in any spelling, changes nothing."""
    assert _hash(tmp_path, f"~{WATCH}.stats_every") == _hash(tmp_path, f"{WATCH}.stats_every=60s") == _hash(tmp_path)


def test_equivalent_spellings_hash_the_same_in_another_process(tmp_path: Path) -> None:
    """The hash is recorded with a result and compared by later runs: another interpreter (another hash seed) agrees.
    The code's identity is left out of the comparison: this tree may be edited between the two processes."""
    script = (
        "import sys; from pathlib import Path; from tests.test_confighash_equivalence import _canonical\n"
        "print(_canonical(Path(sys.argv[1]), '2026-10-29T00:00:00+00:00'))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _canonical(tmp_path, "2026-10-29T00:00Z")


def test_the_canonical_forms() -> None:
    from framework.durations import canonical as duration
    from framework.params import canonical_time

    assert [duration(d) for d in ("60m", "3600s", "1.0h", " 1 h ", "90m", "1.5h", "1w", "1y", "500ms", "0.5s", "0s", "Forever")] == [
        "1h", "1h", "1h", "1h", "90m", "90m", "7d", "365d", "500ms", "500ms", "0ms", "forever"]  # fmt: skip
    assert canonical_time("2026-10-29T02:00:00.25+02:00") == "2026-10-29T00:00:00.250Z"
    assert canonical_time("2026-10-29") == canonical_time("2026-10-29T00:00") == "2026-10-29T00:00:00Z"


TRAINING = "supervised-training-service"
MODEL = f"topology.services.{TRAINING}.params.models.0"


def _loaded(data_dir: Path, horizon: str) -> Any:
    return load(data_dir, "pairs=[EURUSD]", f"{MODEL}.target.horizon={horizon}")


def _run_id_and_card_horizon(loaded: Any) -> tuple[str, str]:
    params = SupervisedTrainingParams.model_validate(loaded.topology.services[TRAINING].params)
    node = SupervisedTraining.__new__(SupervisedTraining)
    node.ctx = SimpleNamespace(pairs=["EURUSD"])  # what _job reads of the context
    job = node._job(params.models[0], cut=1_790_000_000_000)
    return job.run_id, str(job.target["horizon"])  # worker.Job.card: horizon=str(self.target["horizon"])


def test_one_hash_means_one_training_run(tmp_path: Path) -> None:
    """What a node makes from a typed param (a run id, a model card) takes its canonical form: 4h and 240m train one run."""
    a, b = _loaded(tmp_path, "4h"), _loaded(tmp_path, "240m")
    assert config_hash(a.topology, ["EURUSD"], tmp_path) == config_hash(b.topology, ["EURUSD"], tmp_path)
    assert _run_id_and_card_horizon(a) == _run_id_and_card_horizon(b)
