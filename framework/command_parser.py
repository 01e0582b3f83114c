"""The argument parser of an ``fxrun`` plugin command (``fxrun models``, ``fxrun backtest``, …).

A usage mistake is one line naming the command and where its help is, exit code 2, the same in
every command and in each of its verbs' parsers (``parser_class=CommandParser``).
"""

from __future__ import annotations

import argparse

EXIT_USAGE = 2


class CommandParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        command = " ".join(self.prog.split()[:2])  # "fxrun models show" -> "fxrun models"
        self.exit(EXIT_USAGE, f"{command}: {message} (see {command} --help)\n")
