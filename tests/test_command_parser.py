"""The one rule every ``fxrun`` plugin command uses to tell Hydra overrides from its own words."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from framework.command_parser import CommandParser, is_override, split_overrides
from nodes.backtest import command as backtest_command
from nodes.risk_gate import command as risk_command

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_and_own_words_keep_their_order() -> None:
    words = ["show", "topology=live", "--json", "++a.b=1", "~services.x", "name:3", "+c=[1,2]"]
    assert split_overrides(words) == (["show", "--json", "name:3"], ["topology=live", "++a.b=1", "~services.x", "+c=[1,2]"])


def test_an_option_with_an_equals_sign_is_the_commands() -> None:
    assert split_overrides(["--reason=maintenance", "data_dir=/tmp/x"]) == (["--reason=maintenance"], ["data_dir=/tmp/x"])


def test_the_value_of_a_flag_that_takes_one_stays_with_it() -> None:
    words = ["sweep", "--param", "fast=5,10", "--param=slow=30", "seed=3"]
    assert split_overrides(words, {"--param"}) == (["sweep", "--param", "fast=5,10", "--param=slow=30"], ["seed=3"])
    assert split_overrides(words) == (["sweep", "--param", "--param=slow=30"], ["fast=5,10", "seed=3"])


@pytest.mark.parametrize("word", ["/runs/fast=5", "runs/a b=1", "daily loss=5% breached", "--reason=x=y", "=5", "~"])
def test_a_word_whose_key_is_no_config_key_is_the_commands(word: str) -> None:
    assert not is_override(word)


@pytest.mark.parametrize("word", ["data_dir=/tmp/x=y", "++topology.services.a-b.params.x=1", "+c=[1,2]", "~services.x",
                                  "pairs=[EURUSD]", "topology=live", "services.x@g=1"])
def test_a_config_key_with_a_value_or_a_deletion_is_an_override(word: str) -> None:
    assert is_override(word)


def _parser() -> CommandParser:
    parser = CommandParser(prog="fxrun things")
    parser.add_argument("--json", action="store_true")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=CommandParser)
    verbs.add_parser("list")
    show = verbs.add_parser("show")
    show.add_argument("--reason")
    show.add_argument("what", nargs="?")
    return parser


def test_parse_returns_the_arguments_and_the_overrides() -> None:
    parsed = _parser().parse(["--json", "list", "topology=live"])
    assert not isinstance(parsed, int)
    args, overrides = parsed
    assert (args.verb, args.json, overrides) == ("list", True, ["topology=live"])


def test_the_value_of_a_verbs_option_is_never_an_override() -> None:
    """The parser knows its options that take a value (its verbs' too): no command lists them by hand."""
    parsed = _parser().parse(["show", "--reason", "loss=5%", "x=1", "--reason", "~manual"])
    assert not isinstance(parsed, int)
    args, overrides = parsed
    assert (args.reason, overrides) == ("~manual", ["x=1"])


def test_fxrun_risk_halt_keeps_a_reason_holding_an_equals_sign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_PROJECT", str(ROOT))
    reason = "daily loss=5% breached"
    code = risk_command.main(["halt", "--reason", reason, "topology=demo", f"data_dir={tmp_path}"])
    assert code == 0
    queued = orjson.loads((tmp_path / "services" / "risk-management" / "control.json").read_bytes())
    assert (queued["command"], queued["reason"]) == ("halt", reason)


def test_fxrun_backtest_show_takes_a_directory_whose_name_holds_an_equals_sign(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    run = tmp_path / "fast=5"
    result = run / "backtests" / "bt-1" / "result.json"
    result.parent.mkdir(parents=True)
    result.write_bytes(orjson.dumps({"run_id": "bt-1", "metrics": {"trades": 3}, "details": {}}))
    assert backtest_command.main(["show", str(run)]) == 0, capsys.readouterr().err
    assert "backtest bt-1" in capsys.readouterr().out


def test_a_usage_mistake_is_one_line_and_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse(["remove", "topology=live"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fxrun things: ") and "(see fxrun things --help)" in err


def test_help_ends_the_command_with_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse(["--help"]) == 0
    assert "usage: fxrun things" in capsys.readouterr().out
