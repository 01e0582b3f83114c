"""An in-process ``fxrun`` run leaves the root logger as it found it."""

from __future__ import annotations

import logging
from pathlib import Path

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
