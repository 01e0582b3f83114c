"""FX105: a released contract version changes only compatibly; `fxrun contracts publish|check`."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from framework.cli import main
from framework.contracts import ContractRegistry
from framework.lint import RULES, Finding, lint
from framework.lint.evolution import PUBLISHED, check, published_contracts, publish
from framework.registry import Registry
from framework.topology.load import load_run

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "contracts"

QUOTE: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:fxflow:contract:quote.v1",
    "title": "Quote",
    "description": "A small contract for these tests.",
    "type": "object",
    "x-fxflow": {"key": "symbol", "time": "ts"},
    "required": ["symbol", "ts", "bid", "source"],
    "properties": {
        "symbol": {"$ref": "urn:fxflow:contract:common.v1#/$defs/symbol"},
        "ts": {"$ref": "urn:fxflow:contract:common.v1#/$defs/ts"},
        "bid": {"type": "number", "minimum": 0},
        "source": {"$ref": "urn:fxflow:contract:common.v1#/$defs/name"},
        "size": {"type": "integer", "description": "Lots."},
        "seq": {"$ref": "urn:fxflow:contract:common.v1#/$defs/count"},
    },
    "additionalProperties": False,
}


def write(path: Path, schema: dict[str, Any]) -> Path:
    path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    return path


def released(tmp_path: Path, schema: dict[str, Any] = QUOTE) -> Path:
    """A contracts directory whose quote.v1 was published as ``schema``."""
    d = tmp_path / "contracts"
    (d / PUBLISHED).mkdir(parents=True)
    for where in (d, d / PUBLISHED):
        shutil.copyfile(CONTRACTS / "common.v1.json", where / "common.v1.json")
        write(where / "quote.v1.json", schema)
    return d


def edit(d: Path, change: Callable[[dict[str, Any]], None]) -> list[Finding]:
    """Change the current quote.v1 and return the FX105 findings."""
    schema = copy.deepcopy(QUOTE)
    change(schema)
    write(d / "quote.v1.json", schema)
    return check(ContractRegistry.load(d))


def line_of(path: Path, fragment: str, after: str | None = None) -> int:
    lines = path.read_text().splitlines()
    start = next(i for i, text in enumerate(lines) if after in text) if after else 0
    return next(i for i, text in enumerate(lines[start:], start) if fragment in text) + 1


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "error"]


# ---------------------------------------------------------------- compatible changes


def test_an_unchanged_published_contract_has_no_finding(tmp_path: Path) -> None:
    assert check(ContractRegistry.load(released(tmp_path))) == []


def test_adding_an_optional_field_is_info(tmp_path: Path) -> None:
    d = released(tmp_path)
    found = edit(d, lambda s: s["properties"].update(mid={"type": "number"}))
    assert [(f.level, f.code, f.service) for f in found] == [("info", "FX105", "quote.v1")]
    assert "added optional field(s) mid" in found[0].message
    assert "`fxrun contracts publish quote.v1`" in found[0].message
    assert found[0].file.endswith("quote.v1.json") and found[0].line == line_of(d / "quote.v1.json", '"mid"')


def test_adding_a_sequence_to_a_version_without_one_is_info(tmp_path: Path) -> None:
    d = released(tmp_path)
    found = edit(d, lambda s: s["x-fxflow"].update(sequence="seq", stream=["source", "symbol"]))
    assert [f.level for f in found] == ["info"]
    assert "added x-fxflow.sequence 'seq' (stream: source, symbol)" in found[0].message


def test_a_reworded_description_is_info(tmp_path: Path) -> None:
    d = released(tmp_path)
    found = edit(d, lambda s: s["properties"]["size"].update(description="Lots, as the broker counts them."))
    assert [f.level for f in found] == ["info"] and "reworded or restated field(s) size" in found[0].message


def test_a_constraint_the_structural_rule_cannot_judge_is_a_warning(tmp_path: Path) -> None:
    d = released(tmp_path)
    found = edit(d, lambda s: s["properties"]["bid"].update(minimum=1))
    assert [f.level for f in found] == ["warning"]
    assert "field 'bid' changed beyond what the structural check compares (minimum)" in found[0].message
    assert found[0].line == line_of(d / "quote.v1.json", '"bid"', after='"properties"')


def test_a_contract_without_a_snapshot_is_not_published_yet(tmp_path: Path) -> None:
    d = released(tmp_path)
    write(d / "other.v1.json", {**QUOTE, "$id": "urn:fxflow:contract:other.v1"})
    found = check(ContractRegistry.load(d))
    assert [(f.level, f.service) for f in found] == [("info", "other.v1")]
    assert "other.v1 is not published yet" in found[0].message


# ---------------------------------------------------------------- breaking changes


def _required(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda s: s["required"].append(name)


def _removed(name: str) -> Callable[[dict[str, Any]], None]:
    def change(s: dict[str, Any]) -> None:
        del s["properties"][name]
        s["required"] = [r for r in s["required"] if r != name]

    return change


def _typed(name: str, json_type: str) -> Callable[[dict[str, Any]], None]:
    return lambda s: s["properties"][name].update(type=json_type)


BREAKING = {
    # case: (change, reason in the message, fragment of the line it points at, searched after)
    "made required": (_required("size"), "size: optional in published, required by edited", '"size"', '"required"'),
    "new required field": (
        lambda s: (s["properties"].update(mid={"type": "number"}), s["required"].append("mid")),
        "mid: missing", '"mid"', '"required"',
    ),
    "removed required field": (_removed("bid"), "bid: missing", '"required"', None),
    "removed optional field": (_removed("size"), "field 'size' was removed", '"properties"', None),
    "narrowed type": (_typed("bid", "integer"), "bid: published type number vs edited integer", '"bid"', '"properties"'),
    "widened type": (_typed("size", "number"), "size: edited type number vs published integer", '"size"', '"properties"'),
    "key changed": (lambda s: s["x-fxflow"].update(key="source"), "x-fxflow.key changed from 'symbol' to 'source'", '"key"', None),
    "time changed": (
        lambda s: (s["x-fxflow"].update(time="bid_ts"), s["properties"].update(bid_ts={"type": "integer"}), s["required"].append("bid_ts")),
        "x-fxflow.time changed", '"time"', None,
    ),
    "unknown fields refused": (
        lambda s: None, "`additionalProperties: false` was added", '"additionalProperties"', None,
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKING))
def test_a_breaking_change_is_an_error_at_its_line(tmp_path: Path, case: str) -> None:
    change, reason, fragment, after = BREAKING[case]
    published = {k: v for k, v in QUOTE.items() if k != "additionalProperties"} if case == "unknown fields refused" else QUOTE
    d = released(tmp_path, published)
    found = errors(edit(d, change))
    assert found, case
    hit = next((f for f in found if reason in f.message), None)
    assert hit is not None, [f.message for f in found]
    assert hit.code == "FX105" and hit.service == "quote.v1" and hit.file.endswith("contracts/quote.v1.json")
    assert hit.line == line_of(d / "quote.v1.json", fragment, after)
    assert "publish the change as the next major version, quote.v2" in hit.message
    assert not [f for f in edit(d, change) if f.level == "info"], "a breaking change is not listed as compatible"


def test_changing_the_sequence_of_a_version_that_had_one_is_an_error(tmp_path: Path) -> None:
    sequenced = copy.deepcopy(QUOTE)
    sequenced["x-fxflow"].update(sequence="seq", stream=["source", "symbol"])
    d = released(tmp_path, sequenced)
    schema = copy.deepcopy(sequenced)
    schema["x-fxflow"]["stream"] = ["symbol"]
    write(d / "quote.v1.json", schema)
    (found,) = errors(check(ContractRegistry.load(d)))
    assert "x-fxflow sequence/stream changed" in found.message
    assert found.line == line_of(d / "quote.v1.json", '"sequence"')


def test_a_change_of_a_shared_definition_reaches_the_contracts_that_use_it(tmp_path: Path) -> None:
    d = released(tmp_path)
    common = json.loads((d / "common.v1.json").read_text())
    common["$defs"]["symbol"]["type"] = "integer"
    write(d / "common.v1.json", common)
    found = errors(check(ContractRegistry.load(d)))
    assert {f.service for f in found} == {"quote.v1"}
    assert any("symbol: edited type integer vs published string" in f.message for f in found)


# ---------------------------------------------------------------- the shipped contracts and the lint


def _before_issue_9(name: str) -> dict[str, Any]:
    """bar.v1 / tick.v1 as released before the sequence numbers and revisions of issue 9."""
    schema = json.loads((CONTRACTS / f"{name}.json").read_text())
    for key in ("sequence", "stream"):
        schema["x-fxflow"].pop(key, None)
    schema["properties"].pop("revision", None)
    if name == "bar.v1":
        schema["properties"].pop("seq", None)
    else:
        schema["properties"]["seq"]["description"] = "Per-source sequence number, to spot drops and duplicates."
    return schema


def test_the_issue_9_contract_changes_are_compatible(tmp_path: Path) -> None:
    d = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, d, ignore=shutil.ignore_patterns(PUBLISHED))
    (d / PUBLISHED).mkdir()
    for path in d.glob("*.json"):
        shutil.copyfile(path, d / PUBLISHED / path.name)
    for name in ("bar.v1", "tick.v1"):
        write(d / PUBLISHED / f"{name}.json", _before_issue_9(name))
    found = check(ContractRegistry.load(d))
    assert [(f.level, f.service) for f in found] == [("info", "bar.v1"), ("info", "tick.v1")]
    assert "added optional field(s) revision, seq" in found[0].message
    assert "added x-fxflow.sequence 'seq' (stream: source, symbol, timeframe)" in found[0].message


def test_the_shipped_contracts_match_their_snapshots() -> None:
    registry = ContractRegistry.load(CONTRACTS)
    assert set(registry.refs()) == {p.name.removesuffix(".json") for p in (CONTRACTS / PUBLISHED).glob("*.json")} - {"common.v1"}
    assert check(registry) == []


@pytest.mark.parametrize("profile", ["demo", "live", "backtest"])
def test_the_profiles_lint_without_contract_evolution_errors(profile: str) -> None:
    assert published_contracts in RULES
    loaded = load_run([f"topology={profile}"], ROOT)
    found = lint(loaded.topology, loaded.source, Registry.discover(), ContractRegistry.load(CONTRACTS), pairs=loaded.config.pairs)
    assert not [f for f in found if f.level == "error"]
    assert not [f for f in found if f.code == "FX105"]


def test_the_lint_reports_a_breaking_contract_change(tmp_path: Path) -> None:
    d = released(tmp_path)
    edit(d, _required("size"))
    loaded = load_run(["topology=demo"], ROOT)
    found = lint(loaded.topology, loaded.source, Registry.discover(), ContractRegistry.load(d), pairs=loaded.config.pairs)
    assert [f.service for f in found if f.code == "FX105" and f.level == "error"] == ["quote.v1"]


def test_a_broken_snapshot_is_an_error_not_a_crash(tmp_path: Path) -> None:
    d = released(tmp_path)
    (d / PUBLISHED / "quote.v1.json").write_text("{\n  oops\n}\n")
    (found,) = check(ContractRegistry.load(d))
    assert found.level == "error" and found.file.endswith("published/quote.v1.json") and found.line == 2


# ---------------------------------------------------------------- fxrun contracts publish|check


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose quote.v1 is released and then edited compatibly."""
    (tmp_path / "topology").mkdir()
    (tmp_path / "topology" / "services.yaml").write_text("name: t\n")
    d = released(tmp_path)
    edit(d, lambda s: s["properties"].update(mid={"type": "number"}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FXFLOW_PROJECT", raising=False)
    return d


def test_publish_then_the_lint_has_nothing_to_say(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["contracts", "check"]) == 0
    assert "INFO FX105 quote.v1: quote.v1 changed compatibly" in capsys.readouterr().out
    assert main(["contracts", "publish"]) == 0
    out = capsys.readouterr().out
    assert "published quote.v1 (contracts/published/quote.v1.json)" in out and "common.v1: unchanged" in out
    assert (project / PUBLISHED / "quote.v1.json").read_bytes() == (project / "quote.v1.json").read_bytes()
    assert check(ContractRegistry.load(project)) == []
    assert main(["contracts", "check"]) == 0 and capsys.readouterr().out == ""


def test_publish_refuses_a_breaking_change_in_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (project / PUBLISHED / "quote.v1.json").read_bytes()
    edit(project, _removed("bid"))
    assert main(["contracts", "publish", "quote"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fxrun: error: contracts/quote.v1.json:")
    assert "refusing to publish: quote.v1 changed incompatibly" in err[0] and "quote.v2" in err[0]
    assert (project / PUBLISHED / "quote.v1.json").read_bytes() == before
    assert main(["contracts", "check"]) == 1


def test_publish_names_and_new_versions(project: Path) -> None:
    write(project / "other.v1.json", {**QUOTE, "$id": "urn:fxflow:contract:other.v1"})
    assert publish(project, ["other.v1"]) == ["published other.v1 (contracts/published/other.v1.json)"]
    assert [f.service for f in check(ContractRegistry.load(project))] == ["quote.v1"]
    with pytest.raises(Exception, match="no contract 'qoute'.*did you mean 'quote'"):
        publish(project, ["qoute"])


def test_publish_into_an_empty_project_takes_the_shared_files_along(tmp_path: Path) -> None:
    d = tmp_path / "contracts"
    d.mkdir()
    shutil.copyfile(CONTRACTS / "common.v1.json", d / "common.v1.json")
    write(d / "quote.v1.json", QUOTE)
    assert len(publish(d, ["quote"])) == 2
    assert sorted(p.name for p in (d / PUBLISHED).iterdir()) == ["common.v1.json", "quote.v1.json"]
    assert ContractRegistry.load(d).refs() == ["quote.v1"], "published/ is not loaded as contracts"
    assert check(ContractRegistry.load(d)) == []
