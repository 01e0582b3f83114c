"""``fxrun`` (framework.cli.main): the run verb, and user mistakes reported as one line without a traceback."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from framework.cli import main
from framework.topology.load import load_run

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _project(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run as from the project, and undo the logging set-up ``fxrun`` does for its process."""
    monkeypatch.setenv("FXFLOW_PROJECT", str(PROJECT))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def fxrun(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, out: str, err: str) -> list[str]:
    assert code != 0
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.startswith("fxrun: error: ")]
    assert lines, err
    return lines


def test_run_demo_prints_the_metrics_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = fxrun(
        capsys, "topology=demo", "topology.services.polygon-live-collector.params.simulation.duration=10m", f"data_dir={tmp_path}"
    )
    assert code == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["service", "state", "in"])  # after the run's summary
    end = next(i for i, line in enumerate(lines) if line.startswith("dead letters"))
    rows = {line.split()[0]: line.split() for line in lines[header + 2 : end]}
    assert {"polygon-live-collector", "spread-watch", "tick-aggregator", "data-bridge"} <= set(rows)
    assert rows["polygon-live-collector"][1] == "stopped" and rows["spread-watch"][1] == "stopped"
    produced, received = int(rows["polygon-live-collector"][3]), int(rows["spread-watch"][2])
    assert produced > 0 and received == produced
    assert f"dead letters: 0; data under {tmp_path}/" in out
    assert "Traceback" not in err
    doc = orjson.loads((tmp_path / "metrics.json").read_bytes())
    assert {s["service"] for s in doc["services"]} == set(rows)
    assert (tmp_path / "logs" / "fxrun.log").exists()
    # the demo fills ticks and bars of all 7 timeframes for every pair
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path}/clickhouse")
    try:
        pairs = {r[0] for r in client.query("SELECT DISTINCT symbol FROM historical_ticks").result_rows}
        bars = set(client.query("SELECT DISTINCT symbol, timeframe FROM historical_aggregates WHERE source = 'aggregator'").result_rows)
    finally:
        client.close()
    topology = load_run(["topology=demo"]).topology
    assert pairs == set(topology.instruments)
    assert bars == {(s, tf) for s in topology.instruments for tf in topology.timeframes}


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = fxrun(capsys, "--help")
    assert code == 0
    assert "fxrun topology=demo" in out


def test_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    lines = assert_user_error(*fxrun(capsys, "topology=nope"))
    assert "unknown profile topology=nope" in lines[0]
    assert "demo" in lines[0]


def test_unknown_key_added_by_override(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lines = assert_user_error(*fxrun(capsys, "+topology.services.spread-watch.bogus=1", f"data_dir={tmp_path}"))
    assert any("services.spread-watch.bogus" in line and "unknown key 'bogus'" in line for line in lines)


def test_bad_override_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    lines = assert_user_error(*fxrun(capsys, "pairs=[EURUSD"))
    assert "<command line>" in lines[0]


def test_unknown_pair_suggests_one(capsys: pytest.CaptureFixture[str]) -> None:
    lines = assert_user_error(*fxrun(capsys, "pairs=[EURUSD,XAUUDS]"))
    assert any("did you mean XAUUSD" in line for line in lines)


def test_disabled_service_in_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lines = assert_user_error(*fxrun(capsys, "topology.services.spread-watch.enabled=false", "only=[spread-watch]", f"data_dir={tmp_path}"))
    assert any("'spread-watch' is disabled" in line for line in lines)


def test_unknown_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = fxrun(capsys, "--fast")
    assert_user_error(code, out, err)
    assert "--fast" in err


def test_mistake_in_the_yaml_is_reported_with_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(PROJECT / "topology", tmp_path / "topology")
    services = tmp_path / "topology" / "services.yaml"
    text = services.read_text()
    services.write_text(text.replace("    node: template\n", '    node: template\n    replicas: "two"\n', 1))
    line = next(i for i, l in enumerate(services.read_text().splitlines(), 1) if l == '    replicas: "two"')
    monkeypatch.setenv("FXFLOW_PROJECT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    lines = assert_user_error(*fxrun(capsys, f"data_dir={tmp_path / 'data'}"))
    assert any(f"topology/services.yaml:{line}:" in l and "spread-watch.replicas" in l for l in lines)


@pytest.mark.parametrize(("word", "hint"), [("lnt", "did you mean lint?"), ("dcos", "did you mean docs?"), ("xyzzy", "commands: ")])
def test_unknown_command_is_named(capsys: pytest.CaptureFixture[str], word: str, hint: str) -> None:
    code, out, err = fxrun(capsys, word)
    assert code == 2 and out == ""
    assert err.startswith(f"fxrun: error: unknown command {word!r}; {hint}") and len(err.splitlines()) == 1


# Records every file and directory the run creates from Python (chdb's temporary files are
# created and deleted within the run, so an empty directory afterwards alone proves nothing).
_CREATIONS = """
import json, os, sys
created = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)) and isinstance(args[2], int) \\
            and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        created.append(os.path.abspath(os.fsdecode(args[0])))
    elif event == "os.mkdir":
        created.append(os.path.abspath(os.fsdecode(args[0])))
sys.addaudithook(hook)
from framework.cli import main
code = main(sys.argv[1:])
print("CREATED " + json.dumps(created))
sys.exit(code)
"""


def test_a_run_writes_only_under_data_dir(tmp_path: Path) -> None:
    cwd, tmp, data = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "data"
    cwd.mkdir()
    tmp.mkdir()
    env = {**os.environ, "FXFLOW_PROJECT": str(PROJECT), "TMPDIR": str(tmp), "PYTHONPATH": str(PROJECT)}
    argv = [
        "topology=demo",
        "pairs=[EURUSD]",
        "topology.services.polygon-live-collector.params.simulation.duration=5m",
        f"data_dir={data}",
    ]
    result = subprocess.run(
        [sys.executable, "-c", _CREATIONS, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    created = json.loads(next(l for l in result.stdout.splitlines() if l.startswith("CREATED "))[len("CREATED "):])
    outside = [p for p in created if Path(p).is_relative_to(cwd) or Path(p).is_relative_to(tmp)]
    assert outside == []
    assert any(Path(p).is_relative_to(data / "tmp") for p in created)  # the embedded ClickHouse's temporary files
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []
    assert (data / "metrics.json").is_file() and (data / "logs" / "fxrun.log").is_file()
    assert (data / "clickhouse").is_dir()
