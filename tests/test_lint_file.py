"""``fxrun lint FILE topology=<profile>``: the profile composed over FILE, in place of its services.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framework.cli import main
from framework.topology.load import load_file, load_run

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "topology" / "services.yaml"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("FXFLOW_PROJECT", raising=False)


def _findings(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict]]:
    code = main(["lint", "--json", *argv])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("profile", ["demo", "live", "backtest"])
def test_the_projects_file_under_a_profile_is_the_profile(profile: str) -> None:
    composed = load_file(Path("topology/services.yaml"), [f"topology={profile}", "pairs=[EURUSD]"])
    assert composed.config == load_run([f"topology={profile}", "pairs=[EURUSD]"], ROOT).config
    assert composed.profile == profile


def test_lint_file_with_a_profile_composes_the_profile_over_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "services.yaml"
    copy.write_text(SERVICES.read_text().replace("  run_id: {identifier: true", "  run_id: {identifier: false"))
    code, alone = _findings(capsys, str(copy))
    assert code == 1
    code, composed = _findings(capsys, str(copy), "topology=backtest")
    assert code == 1
    # the backtest profile's own settings apply: it disables the live collector and enables the backtesting engine
    disabled = {f["service"] for f in composed if f["code"] == "FX100"}
    assert "polygon-live-collector" in disabled and "backtesting-engine" not in disabled
    assert "polygon-live-collector" not in {f["service"] for f in alone if f["code"] == "FX100"}
    # the file's findings keep the file's lines
    fx401 = [f for f in composed if f["code"] == "FX401"]
    assert fx401 and all(f["file"] == str(copy) and f["line"] for f in fx401)
    assert {(f["service"], f["line"]) for f in fx401} == {(f["service"], f["line"]) for f in alone if f["code"] == "FX401"}


def test_lint_file_with_a_profile_and_further_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "topology/services.yaml", "topology=live", "topology.services.spread-watch.enabled=false"]) == 0
    assert "WARNING FX100 spread-watch: " in capsys.readouterr().out


def test_a_profile_naming_a_service_the_file_lacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "services.yaml"
    copy.write_text(SERVICES.read_text().replace("  data-bridge:\n", "  archive-bridge:\n"))
    assert main(["lint", str(copy), "topology=demo"]) == 1
    err = capsys.readouterr().err
    assert "topology/demo.yaml:" in err and "'data-bridge' is not declared" in err and str(copy) in err


def test_a_profile_file_with_another_profile_is_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "topology/demo.yaml", "topology=live"]) == 1
    assert "cannot be combined with a file" in capsys.readouterr().err
