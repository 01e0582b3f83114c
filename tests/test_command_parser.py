"""The one rule every ``fxrun`` plugin command uses to tell Hydra overrides from its own words."""

from __future__ import annotations

import pytest

from framework.command_parser import CommandParser, split_overrides


def test_overrides_and_own_words_keep_their_order() -> None:
    words = ["show", "topology=live", "--json", "++a.b=1", "~services.x", "name:3", "+c=[1,2]"]
    assert split_overrides(words) == (["show", "--json", "name:3"], ["topology=live", "++a.b=1", "~services.x", "+c=[1,2]"])


def test_an_option_with_an_equals_sign_is_the_commands() -> None:
    assert split_overrides(["--reason=maintenance", "data_dir=/tmp/x"]) == (["--reason=maintenance"], ["data_dir=/tmp/x"])


def test_the_value_of_a_flag_that_takes_one_stays_with_it() -> None:
    words = ["sweep", "--param", "fast=5,10", "--param=slow=30", "seed=3"]
    assert split_overrides(words, {"--param"}) == (["sweep", "--param", "fast=5,10", "--param=slow=30"], ["seed=3"])
    assert split_overrides(words) == (["sweep", "--param", "--param=slow=30"], ["fast=5,10", "seed=3"])


def _parser() -> CommandParser:
    parser = CommandParser(prog="fxrun things")
    parser.add_argument("verb", choices=["list", "show"])
    parser.add_argument("--json", action="store_true")
    return parser


def test_parse_returns_the_arguments_and_the_overrides() -> None:
    parsed = _parser().parse(["list", "topology=live", "--json"])
    assert not isinstance(parsed, int)
    args, overrides = parsed
    assert (args.verb, args.json, overrides) == ("list", True, ["topology=live"])


def test_a_usage_mistake_is_one_line_and_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse(["remove", "topology=live"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fxrun things: ") and "(see fxrun things --help)" in err


def test_help_ends_the_command_with_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse(["--help"]) == 0
    assert "usage: fxrun things" in capsys.readouterr().out
