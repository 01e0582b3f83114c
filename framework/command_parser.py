"""The argument parser of an ``fxrun`` plugin command (``fxrun models``, ``fxrun backtest``, …).

A usage mistake is one line naming the command and where its help is, exit code 2, the same in
every command and in each of its verbs' parsers (``parser_class=CommandParser``).

A command that runs against a topology takes Hydra overrides among its own words
(``fxrun models list topology=live data_dir=/srv/fx``): :meth:`CommandParser.parse` tells them
apart, one rule for every command.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Sequence

EXIT_USAGE = 2


def is_override(word: str) -> bool:
    """A Hydra override: ``key=value`` (also ``+key=…``, ``++key=…``) or a deletion ``~key``; never an option."""
    return word.startswith("~") or ("=" in word and not word.startswith("-"))


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


class CommandParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        command = " ".join(self.prog.split()[:2])  # "fxrun models show" -> "fxrun models"
        self.exit(EXIT_USAGE, f"{command}: {message} (see {command} --help)\n")

    def parse(self, words: Sequence[str], flags_with_values: Collection[str] = ()) -> tuple[argparse.Namespace, list[str]] | int:
        """The parsed arguments and the overrides among ``words`` (:func:`split_overrides`), or the exit code when
        parsing ended the command (``--help``: 0; a usage mistake, already printed: 2)."""
        own, overrides = split_overrides(words, flags_with_values)
        try:
            return self.parse_args(own), overrides
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
