"""The lint, docs and status verbs of fxrun, and the registry's promise not to import node implementations."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from framework.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("FXFLOW_PROJECT", raising=False)


def test_lint_of_the_literal_seed_fails_with_one_line_per_finding(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "tests/fixtures/seed_literal/services.yaml"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out and all(line.split()[0] in ("ERROR", "WARNING", "INFO") for line in out)
    fx201 = [line for line in out if " FX201 " in line]
    assert fx201 and fx201[0].startswith("ERROR FX201 data-bridge: ")
    assert fx201[0].endswith(")") and "seed_literal/services.yaml:" in fx201[0]


def test_lint_json_of_a_profile_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "--json", "topology=live"]) == 0
    findings = json.loads(capsys.readouterr().out)
    assert findings and {f["level"] for f in findings} <= {"warning", "info"}
    assert {"level", "code", "service", "message", "file", "line"} <= set(findings[0])


def test_lint_of_a_profile_file_composes_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "--quiet", "topology/backtest.yaml"]) == 0
    assert "0 error(s)" in capsys.readouterr().err


def test_docs_check_passes_on_the_repo_and_fails_when_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["docs", "--check"]) == 0
    for part in ("topology", "contracts", "docs"):
        shutil.copytree(ROOT / part, tmp_path / part)
    services = tmp_path / "topology" / "services.yaml"
    services.write_text(services.read_text().replace("  EURAUD: {pip: 0.0001, digits: 5}\n", "  EURAUD: {pip: 0.0001, digits: 5}\n  USDSEK: {pip: 0.0001, digits: 5}\n"))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["docs", "--check"]) == 1
    assert "stale: architecture.md" in capsys.readouterr().err
    assert main(["docs"]) == 0
    assert "USDSEK" in (tmp_path / "docs" / "architecture.md").read_text()
    assert main(["docs", "--check"]) == 0


def test_status_reads_the_metrics_of_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(tmp_path)]) == 1
    assert "no metrics" in capsys.readouterr().err
    code = main(["topology=demo", f"data_dir={tmp_path}", "topology.services.polygon-live-collector.params.simulation.duration=5m"])
    assert code == 0
    capsys.readouterr()
    assert main(["status", f"data_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "polygon-live-collector" in out and "spread-watch" in out


def test_status_into_a_pipe_the_reader_closed_exits_quietly(tmp_path: Path) -> None:
    """``fxrun status | head -1``: the reader may be gone before status writes; no traceback then."""
    from framework.metrics import ServiceMetrics

    services = [ServiceMetrics(f"service-{i}").snapshot() for i in range(200)]
    (tmp_path / "metrics.json").write_text(json.dumps({"ts": 0, "services": services}))
    read_end, write_end = os.pipe()
    os.close(read_end)  # a reader that has already exited: every write is EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "framework.cli", "status", str(tmp_path)],
            cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")
    head = subprocess.run(
        f"{shlex.quote(sys.executable)} -m framework.cli status {shlex.quote(str(tmp_path))} | head -1",
        shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert head.stdout.startswith(f"{tmp_path / 'metrics.json'} (") and len(head.stdout.splitlines()) == 1
    assert head.stderr == ""


def test_lint_and_docs_do_not_import_node_implementations() -> None:
    """Specs are read from light modules; implementations (and their heavy deps) load only to run."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from framework.contracts import ContractRegistry\n"
        "from framework.docgen import render_architecture\n"
        "from framework.lint import lint\n"
        "from framework.registry import Registry\n"
        "from framework.topology.load import load_topology_file\n"
        "registry = Registry.discover()\n"
        "contracts = ContractRegistry.load(Path('contracts'))\n"
        "topology, source = load_topology_file(Path('topology/services.yaml'))\n"
        "lint(topology, source, registry, contracts)\n"
        "render_architecture(topology, registry, contracts)\n"
        "assert 'template' in registry and 'synthetic_ticks' in registry\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('nodes.') and m.endswith('.node'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_run_refuses_a_topology_that_fails_lint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for part in ("topology", "contracts"):
        shutil.copytree(ROOT / part, tmp_path / part)
    services = tmp_path / "topology" / "services.yaml"
    text = services.read_text()
    broken = text.replace('      ticks: {nats: "ticks.{symbol}"}\n', '      ticks: {nats: "tick.{symbol}"}\n')
    assert broken != text
    services.write_text(broken)
    monkeypatch.chdir(tmp_path)
    assert main(["topology=demo", f"data_dir={tmp_path / 'run'}"]) == 1
    err = capsys.readouterr().err
    assert "ERROR FX201 spread-watch" in err and "nothing was started" in err
    assert not (tmp_path / "run" / "metrics.json").exists()


# ---------------------------------------------------------------- lint FILE


def test_lint_of_the_projects_own_services_file_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "topology/services.yaml"]) == 0
    out = capsys.readouterr().out
    assert " FX102 " not in out and "${" not in out


def test_lint_of_a_file_applies_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "topology/services.yaml", "topology.services.spread-watch.enabled=false"]) == 0
    assert "WARNING FX100 spread-watch: " in capsys.readouterr().out
    assert main(["lint", "--json", "topology/services.yaml", "pairs=[EURUSD,XAUUDS]"]) == 1
    (finding,) = [f for f in json.loads(capsys.readouterr().out) if f["code"] == "FX401"]
    assert finding["service"] == "topology" and "did you mean XAUUSD" in finding["message"]


def test_lint_of_a_profile_file_composes_it_from_its_own_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(ROOT / "topology", tmp_path / "topology")
    demo = tmp_path / "topology" / "demo.yaml"
    demo.write_text(demo.read_text().replace("  data-bridge:\n", "  data-brigde:\n"))
    assert main(["lint", str(demo)]) == 1
    err = capsys.readouterr().err
    assert f"{demo}:" in err and "'data-brigde' is not declared" in err
    assert main(["lint", "--quiet", "topology/demo.yaml"]) == 0  # the project's own profile is fine


def test_lint_of_a_profile_outside_a_topology_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stray = tmp_path / "demo.yaml"
    shutil.copy(ROOT / "topology" / "demo.yaml", stray)
    assert main(["lint", str(stray)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fxrun: error: {stray}: this is a profile") and "topology/ directory" in err


def _with_duplicates(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """A copy of services.yaml with one duplicate service, topic and table key; the lines of the repeats."""
    text = (ROOT / "topology" / "services.yaml").read_text()
    text = text.replace("topics:\n", "topics:\n  tick_archive: {partitions: 1, retention: 1d}\n", 1)
    text = text.replace("tables:\n", "tables:\n  tick_stats: {store: clickhouse, contract: tick_stats.v1, retention: 1d}\n", 1)
    text += "\n  spread-watch:\n    node: template\n    phase: support\n"
    path = tmp_path / "services.yaml"
    path.write_text(text)
    lines = text.splitlines()

    def second(prefix: str) -> int:
        return [n for n, line in enumerate(lines, 1) if line.startswith(prefix)][1]

    return path, {name: second(f"  {name}:") for name in ("spread-watch", "tick_archive", "tick_stats")}


def test_lint_reports_duplicate_keys_as_fx402_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, lines = _with_duplicates(tmp_path)
    assert main(["lint", str(path)]) == 1
    out, err = capsys.readouterr()
    found = sorted(line for line in out.splitlines() if line.startswith("ERROR FX402 "))
    assert found == sorted(
        [
            f"ERROR FX402 spread-watch: duplicate service 'spread-watch' (first defined at line {_first(path, '  spread-watch:')}); "
            f"YAML keeps only the last one, so rename or merge them ({path}:{lines['spread-watch']})",
            f"ERROR FX402 tick_archive: duplicate topic 'tick_archive' (first defined at line {_first(path, '  tick_archive:')}); "
            f"YAML keeps only the last one, so rename or merge them ({path}:{lines['tick_archive']})",
            f"ERROR FX402 tick_stats: duplicate table 'tick_stats' (first defined at line {_first(path, '  tick_stats:')}); "
            f"YAML keeps only the last one, so rename or merge them ({path}:{lines['tick_stats']})",
        ]
    )
    assert "fxrun: error" not in err and "3 error(s)" in err


def _first(path: Path, prefix: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(prefix))


def test_lint_json_reports_duplicate_keys_as_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, lines = _with_duplicates(tmp_path)
    assert main(["lint", "--json", str(path)]) == 1
    findings = json.loads(capsys.readouterr().out)
    got = {(f["code"], f["level"], f["service"], f["file"], f["line"]) for f in findings}
    assert got == {("FX402", "error", name, str(path), line) for name, line in lines.items()}


def test_lint_json_reports_any_other_load_error_as_a_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: \xff\xfe bad\n")
    assert main(["lint", "--json", str(path)]) == 1
    (finding,) = json.loads(capsys.readouterr().out)
    assert (finding["code"], finding["level"], finding["file"], finding["line"]) == ("FX000", "error", str(path), 1)
    assert "not UTF-8" in finding["message"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"name: \xff\xfe bad\n", ":1: not UTF-8 text: byte 0xff at offset 6"),
        (b"a:" + b" [" * 2000 + b"\n", ":1: YAML nested more than"),
        (b"a: 1\n" + bytes(range(256)) * 4, ":3: not UTF-8 text: byte 0x80 at offset 133"),
        (b"a: 1\nb: \x00\x00\x00\n", ":2: not a YAML text file: character U+0000"),
    ],
)
def test_lint_of_an_unreadable_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert main(["lint", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith(f"fxrun: error: {path}{expected}")


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("not a directory")
    assert main(["topology=demo", f"data_dir={taken}", "pairs=[EURUSD]"]) == 1
    err = capsys.readouterr().err
    assert f"<command line>: data_dir: cannot keep the run's files in {taken}: it is a file" in err
    assert "Traceback" not in err
    assert taken.read_text() == "not a directory"
