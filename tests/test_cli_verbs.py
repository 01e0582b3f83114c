"""The lint, docs and status verbs of fxrun, and the registry's promise not to import node implementations."""

from __future__ import annotations

import json
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
