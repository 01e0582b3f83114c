"""The argument parser of an ``fxrun`` plugin command (``fxrun models``, ``fxrun backtest``, …).

A usage mistake is one line naming the command and where its help is, exit code 2, the same in
every command and in each of its verbs' parsers (``parser_class=CommandParser``).

A command that runs against a topology takes Hydra overrides among its own words
(``fxrun models list topology=live data_dir=/srv/fx``): :meth:`CommandParser.parse` tells them
apart, one rule for every command.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Collection, Sequence

EXIT_USAGE = 2

_OVERRIDE = re.compile(r"[~+]{0,2}[A-Za-z_][\w.@/\-]*(=|$)")
"""A Hydra override's key: ``key=value``, ``+key=…``, ``++key=…``, a deletion ``~key`` (``~key=value`` too)."""


def is_override(word: str) -> bool:
    """A Hydra override, by the shape of its key: ``data_dir=/x`` and ``~services.x`` are, ``--reason=a=b``,
    ``/runs/fast=5`` (a path) and ``daily loss=5%`` (a sentence) are not."""
    match = _OVERRIDE.match(word)
    return match is not None and (match.group(1) == "=" or word.startswith("~"))


def split_overrides(words: Sequence[str], flags_with_values: Collection[str] = ()) -> tuple[list[str], list[str]]:
    """(the command's own words, the overrides) of ``words``, each in its order. The word after a flag of
    ``flags_with_values`` is that flag's value even when it looks like an override (``--param fast=5,10``)."""
    own: list[str] = []
    overrides: list[str] = []
    value_next = False
    for word in words:
        if value_next:
            own.append(word)
            value_next = False
        elif word in flags_with_values:
            own.append(word)
            value_next = True
        elif is_override(word):
            overrides.append(word)
        else:
            own.append(word)
    return own, overrides


def value_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings of ``parser`` and its verbs' parsers that take one value (``--reason``, ``--param``)."""
    flags: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                flags |= value_flags(sub)
        elif action.option_strings and action.nargs in (None, 1):
            flags.update(s for s in action.option_strings if s.startswith("--") or len(s) == 2)
    return flags


class CommandParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        command = " ".join(self.prog.split()[:2])  # "fxrun models show" -> "fxrun models"
        self.exit(EXIT_USAGE, f"{command}: {message} (see {command} --help)\n")

    def parse(self, words: Sequence[str]) -> tuple[argparse.Namespace, list[str]] | int:
        """The parsed arguments and the overrides among ``words`` (:func:`split_overrides`; the value of an option
        that takes one is the option's whatever it looks like), or the exit code when parsing ended the command
        (``--help``: 0; a usage mistake, already printed: 2)."""
        own, overrides = split_overrides(words, value_flags(self))
        try:
            return self.parse_args(own), overrides
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
