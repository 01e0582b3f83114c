"""An in-process ``fxrun`` run leaves the root logger, ``TMPDIR`` and ``tempfile`` as it found them."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest

from framework.cli import main


def test_run_removes_its_log_handlers_and_keeps_the_log_file(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    code = main(["topology=demo", "duration=0.3s", f"data_dir={tmp_path}", "only=[spread-watch]"])
    assert code == 0
    assert root.handlers == before
    assert root.level == level
    assert "fxrun topology=demo" in (tmp_path / "logs" / "fxrun.log").read_text()


def test_run_puts_temporary_files_under_data_dir_and_restores_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "system-tmp"))
    before = tempfile.tempdir
    code = main(["topology=demo", "duration=0.3s", f"data_dir={tmp_path / 'run'}", "only=[spread-watch]"])
    assert code == 0
    assert (tmp_path / "run" / "tmp").is_dir()
    assert os.environ["TMPDIR"] == str(tmp_path / "system-tmp")
    assert tempfile.tempdir == before
