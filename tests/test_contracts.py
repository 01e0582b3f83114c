"""Contracts: the files in contracts/, the registry that loads them, compatibility, boundary validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.contracts import (
    BoundaryValidator,
    Contract,
    ContractRegistry,
    ValidationMode,
)
from framework.errors import UserError, UserErrors
from framework.lint.compatibility import compatible

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "contracts"
EXAMPLES = Path(__file__).parent / "fixtures" / "contract_examples"
REGISTRY = ContractRegistry.load(CONTRACTS)
ALL_REFS = REGISTRY.refs()

EXPECTED = {
    "tick", "data_gap", "bar", "features", "external_event", "signal", "risk_decision",
    "approved_signal", "order_event", "fill", "broker_error", "broker_log", "alert",
    "training_status", "backtest_status", "notification", "dead_letter",
}


def example(ref: str) -> dict:
    return json.loads((EXAMPLES / f"{ref}.json").read_text())


# ---------------------------------------------------------------- the contract files


def test_every_contract_file_loads():
    assert {REGISTRY.resolve(r).name for r in ALL_REFS} >= EXPECTED
    files = {p.name.removesuffix(".json") for p in CONTRACTS.glob("*.json")}
    assert files == set(ALL_REFS) | {"common.v1"}  # common holds shared $defs only
    assert "common" not in REGISTRY and "common.v1" not in REGISTRY


@pytest.mark.parametrize("ref", ALL_REFS)
def test_contract_conventions(ref):
    c = REGISTRY.resolve(ref)
    assert c.schema["$id"] == f"urn:fxflow:contract:{ref}"
    assert c.schema["title"] and c.schema["description"]
    assert c.time_field in c.required()
    assert c.key_field is None or c.key_field in c.required()
    assert set(c.required()) <= set(c.properties())
    assert all("$ref" not in p for p in c.properties().values()), "properties() inlines $ref"


def test_every_contract_has_an_example_and_no_stray_examples():
    assert {p.name.removesuffix(".json") for p in EXAMPLES.glob("*.json")} == set(ALL_REFS)


@pytest.mark.parametrize("ref", ALL_REFS)
def test_example_is_valid(ref):
    c, msg = REGISTRY.resolve(ref), example(ref)
    assert c.validate(msg) is None
    assert c.is_valid(msg)


@pytest.mark.parametrize("ref", ALL_REFS)
def test_rejects_missing_required_field(ref):
    c = REGISTRY.resolve(ref)
    for name in c.required():
        msg = example(ref)
        del msg[name]
        assert not c.is_valid(msg)
        assert name in c.validate(msg)


@pytest.mark.parametrize("ref", ALL_REFS)
def test_rejects_extra_field(ref):
    c, msg = REGISTRY.resolve(ref), example(ref)
    msg["unexpected"] = 1
    assert not c.is_valid(msg)
    assert "unexpected" in c.validate(msg)


@pytest.mark.parametrize("ref", ALL_REFS)
def test_rejects_crossed_types(ref):
    c = REGISTRY.resolve(ref)
    for value in ("2025-10-18T10:00:00Z", -1, 1760781600.5, 1760781600000 * 1000, True):
        msg = example(ref)
        msg[c.time_field] = value  # ISO string, negative, float seconds, microseconds, bool
        assert not c.is_valid(msg), value
        assert c.validate(msg).startswith(f"{c.time_field}: ")
    if c.key_field == "symbol":
        for bad in ("eurusd", "EUR/USD", "EU", 42):
            msg = example(ref)
            msg["symbol"] = bad
            assert not c.is_valid(msg), bad


@pytest.mark.parametrize(
    "ref, field", [("tick.v1", "bid"), ("tick.v1", "ask"), ("bar.v1", "low"), ("fill.v1", "price"),
                   ("approved_signal.v1", "quantity"), ("signal.v1", "price")]
)
def test_rejects_non_positive_prices_and_quantities(ref, field):
    c = REGISTRY.resolve(ref)
    for bad in (-1, 0, "1.1", None):
        msg = example(ref)
        msg[field] = bad
        assert not c.is_valid(msg), bad


def test_reason_is_one_line_with_the_path():
    tick = REGISTRY.resolve("tick")
    msg = example("tick.v1") | {"bid": -1}
    assert tick.validate(msg) == "bid: -1 is less than or equal to the minimum of 0"
    msg["extra"] = 1
    reason = tick.validate(msg)
    assert "\n" not in reason and reason.endswith("(+1 more)")
    feats = example("features.v1")
    feats["values"]["rsi_14"] = "high"
    assert REGISTRY.resolve("features").validate(feats).startswith("values.rsi_14: ")
    decision = example("risk_decision.v1") | {"reasons": ["ok", ""]}
    assert REGISTRY.resolve("risk_decision").validate(decision).startswith("reasons[1]: ")


def test_specific_rules():
    bar = REGISTRY.resolve("bar")
    assert not bar.is_valid(example("bar.v1") | {"timeframe": "5min"})
    assert not bar.is_valid(example("bar.v1") | {"tick_count": 1.5})
    assert bar.is_valid(example("bar.v1") | {"spread_mean": None, "spread_min": None, "spread_max": None})
    order = REGISTRY.resolve("order_event")
    limit_without_price = {k: v for k, v in example("order_event.v1").items() if k != "limit_price"}
    assert not order.is_valid(limit_without_price)
    assert order.is_valid(limit_without_price | {"order_type": "market"})
    assert not order.is_valid(example("order_event.v1") | {"status": "done"})
    signal = REGISTRY.resolve("signal")
    assert not signal.is_valid(example("signal.v1") | {"confidence": 1.2})
    assert signal.is_valid(example("signal.v1") | {"side": "flat"})
    assert not REGISTRY.resolve("approved_signal").is_valid(example("approved_signal.v1") | {"side": "flat"})
    dead = REGISTRY.resolve("dead_letter")
    assert dead.is_valid(example("dead_letter.v1") | {"payload": "not even an object"})


def test_mapping_and_non_json_values():
    from datetime import datetime, timezone
    from types import MappingProxyType

    tick = REGISTRY.resolve("tick")
    assert tick.is_valid(MappingProxyType(example("tick.v1")))
    bad = example("tick.v1") | {"ts": datetime.now(timezone.utc)}  # not JSON: invalid, no crash
    assert not tick.is_valid(bad)
    assert "not a JSON message" in tick.validate(bad)


@settings(max_examples=200, deadline=None)
@given(
    bid=st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.none(), st.text(max_size=3)),
    ts=st.one_of(st.integers(min_value=-10, max_value=2**62), st.floats(allow_nan=False, allow_infinity=False)),
)
def test_fast_and_detailed_paths_agree(bid, ts):
    tick = REGISTRY.resolve("tick")
    msg = example("tick.v1") | {"bid": bid, "ts": ts}
    assert tick.is_valid(msg) == (tick.validate(msg) is None)


# ---------------------------------------------------------------- registry


def contracts_dir(tmp_path: Path, *names: str) -> Path:
    """A fresh contracts dir with common.v1 and copies of the named real contracts."""
    for name in ("common.v1", *names):
        shutil.copy(CONTRACTS / f"{name}.json", tmp_path / f"{name}.json")
    return tmp_path


def write(path: Path, schema: dict) -> Path:
    path.write_text(json.dumps(schema, indent=2))
    return path


def tick_v2(tmp_path: Path) -> Path:
    schema = json.loads((CONTRACTS / "tick.v1.json").read_text())
    schema["$id"] = "urn:fxflow:contract:tick.v2"
    schema["properties"]["mid"] = {"$ref": "urn:fxflow:contract:common.v1#/$defs/price"}
    schema["required"].append("mid")
    return write(tmp_path / "tick.v2.json", schema)


def test_resolve_exact_latest_and_contains(tmp_path):
    d = contracts_dir(tmp_path, "tick.v1", "bar.v1")
    tick_v2(d)
    reg = ContractRegistry.load(d)
    assert reg.refs() == ["bar.v1", "tick.v1", "tick.v2"]
    assert reg.resolve("tick.v1").version == 1
    assert reg.resolve("tick").ref == "tick.v2"
    assert "tick" in reg and "tick.v2" in reg and "tick.v3" not in reg
    v1 = reg.resolve("tick.v1")
    assert (v1.name, v1.key_field, v1.time_field, v1.file) == ("tick", "symbol", "ts", d / "tick.v1.json")


def test_unknown_ref_suggests(tmp_path):
    with pytest.raises(KeyError, match=r"did you mean 'tick'"):
        REGISTRY.resolve("tikc")
    with pytest.raises(KeyError, match=r"did you mean 'order_event.v1'"):
        REGISTRY.resolve("order_events.v1")
    with pytest.raises(KeyError, match="unknown contract 'zzz'"):
        REGISTRY.resolve("zzz")


def test_malformed_json_names_file_and_line(tmp_path):
    d = contracts_dir(tmp_path, "tick.v1")
    (d / "bar.v1.json").write_text('{\n  "title": "Bar",\n  "type": "object"\n  "required": []\n}\n')
    with pytest.raises(UserError) as err:
        ContractRegistry.load(d)
    assert err.value.file.endswith("bar.v1.json") and err.value.line == 4
    assert "bar.v1.json:4: malformed JSON" in str(err.value)


def test_schema_invalid_against_metaschema_names_file(tmp_path):
    d = contracts_dir(tmp_path)
    schema = json.loads((CONTRACTS / "tick.v1.json").read_text())
    schema["properties"]["bid"] = {"type": "decimal"}
    write(d / "tick.v1.json", schema)
    with pytest.raises(UserError) as err:
        ContractRegistry.load(d)
    assert err.value.file.endswith("tick.v1.json")
    assert err.value.path == "properties.bid.type"
    assert "invalid JSON Schema" in err.value.message
    assert err.value.line and '"type": "decimal"' in (d / "tick.v1.json").read_text().splitlines()[err.value.line - 1]


def test_several_problems_are_all_reported(tmp_path):
    d = contracts_dir(tmp_path, "tick.v1")
    write(d / "Bar-v1.json", {})  # bad file name
    schema = json.loads((CONTRACTS / "fill.v1.json").read_text())
    write(d / "fill.v2.json", schema)  # $id says v1
    schema = json.loads((CONTRACTS / "alert.v1.json").read_text())
    schema["x-fxflow"] = {"key": "nope", "time": "ts"}
    write(d / "alert.v1.json", schema)
    with pytest.raises(UserErrors) as err:
        ContractRegistry.load(d)
    files = sorted(Path(e.file).name for e in err.value.errors)
    assert files == ["Bar-v1.json", "alert.v1.json", "fill.v2.json"]
    assert "the file name requires 'urn:fxflow:contract:fill.v2'" in str(err.value)


def test_dangling_ref_is_a_load_error(tmp_path):
    d = contracts_dir(tmp_path)
    schema = json.loads((CONTRACTS / "tick.v1.json").read_text())
    schema["properties"]["bid"] = {"$ref": "urn:fxflow:contract:common.v1#/$defs/no_such_def"}
    write(d / "tick.v1.json", schema)
    with pytest.raises(UserError, match="unresolvable \\$ref") as err:
        ContractRegistry.load(d)
    assert err.value.file.endswith("tick.v1.json")


# ---------------------------------------------------------------- compatibility


def small_contract(name: str, props: dict, required: list[str]) -> Contract:
    return Contract.from_schema({
        "$id": f"urn:fxflow:contract:{name}.v1", "type": "object", "properties": props,
        "required": required, "x-fxflow": {"key": None, "time": "ts"},
    })


def test_compatible(tmp_path):
    tick, signal, approved = (REGISTRY.resolve(r) for r in ("tick", "signal", "approved_signal"))
    assert compatible(tick, tick) is None

    d = contracts_dir(tmp_path, "tick.v1")
    tick_v2(d)
    reg = ContractRegistry.load(d)
    assert "major versions differ" in compatible(reg.resolve("tick.v2"), reg.resolve("tick.v1"))

    # Structural subtyping: a consumer that only needs symbol/ts/bid accepts ticks.
    quote = small_contract("quote", {"symbol": {"type": "string"}, "ts": {"type": "number"},
                                     "bid": {"type": "number"}}, ["symbol", "ts", "bid"])
    assert compatible(tick, quote) is None  # integer ts fits number
    assert "tick_count: missing" in compatible(tick, REGISTRY.resolve("bar"))

    reason = compatible(signal, approved)
    assert "decision_id: missing" in reason and "quantity: missing" in reason
    assert "side: producer may send ['flat']" in reason

    typed = small_contract("typed", {"ts": {"type": "integer"}, "bid": {"type": "string"}}, ["ts", "bid"])
    assert "bid: producer type number vs consumer string" in compatible(tick, typed)
    optional = small_contract("opt", {"ts": {"type": "integer"}, "seq": {"type": "integer"}}, ["ts", "seq"])
    assert "seq: optional in producer" in compatible(tick, optional)


# ---------------------------------------------------------------- boundary validation


def test_boundary_strict_rejects():
    v = BoundaryValidator("strict")
    tick = REGISTRY.resolve("tick")
    assert v.check(tick, example("tick.v1")) is None
    assert v.check(tick, example("tick.v1") | {"ask": 0}) == "ask: 0 is less than or equal to the minimum of 0"
    assert (v.checked, v.rejected) == (2, 1)


def test_boundary_sampled_checks_one_in_n_per_contract():
    v = BoundaryValidator(ValidationMode.SAMPLED, sample_every=10)
    tick, bar = REGISTRY.resolve("tick"), REGISTRY.resolve("bar")
    bad = example("tick.v1") | {"bid": -1}
    reasons = [v.check(tick, bad) for _ in range(100)]
    assert v.checked == 10 and v.rejected == 10
    assert [i for i, r in enumerate(reasons) if r] == list(range(0, 100, 10))
    v.check(bar, example("bar.v1"))  # its own counter: the first bar is checked
    assert v.checked == 11


def test_boundary_off_checks_nothing():
    v = BoundaryValidator("off")
    assert all(v.check(REGISTRY.resolve("tick"), {"garbage": True}) is None for _ in range(50))
    assert (v.checked, v.rejected) == (0, 0)


def test_boundary_bad_settings():
    with pytest.raises(UserError, match="not one of: strict, sampled, off"):
        BoundaryValidator("lenient")
    with pytest.raises(UserError, match="sample_every"):
        BoundaryValidator("sampled", sample_every=0)
