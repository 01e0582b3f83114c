"""The README's dashboard screenshot, taken from a real demo run (``python3 tasks.py screenshot``).

Runs ``fxrun topology=demo serve_after=true`` in a data directory of its own, waits for the
summary and the dashboard still serving the finished run, opens the page in headless Chromium
(tests/browser.py: Debian's chromium over the DevTools protocol), waits until the chart, the
equity curve and the orders are drawn, saves ``docs/img/dashboard.png`` and stops the run
with SIGINT (as Ctrl-C would).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import browser as chromium  # noqa: E402

URL = re.compile(r">>> dashboard-service keeps serving the finished run on (\S+) until Ctrl-C")
READY = (
    "document.getElementById('status').dataset.state === 'live'",
    "document.querySelectorAll('#map .svc').length > 10",
    "document.getElementById('chart-note').textContent.includes('candles')",
    "document.getElementById('equity-note').textContent.includes('max drawdown')",
)


def serve(data_dir: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    fxrun = Path(sys.executable).parent / "fxrun"
    proc = subprocess.Popen(
        [str(fxrun), "topology=demo", "serve_after=true", f"data_dir={data_dir}", "topology.services.dashboard-service.params.port=0"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        found = URL.search(line)
        if found:
            return proc, found[1]
    raise SystemExit(f"the demo ended without serving its dashboard (exit {proc.wait()}); see {log}")


async def shoot(url: str, out: Path, profile: Path) -> None:
    async with chromium.Browser.launch(profile, width=1500, height=1400) as browser:
        page = await browser.page()
        await page.goto(url)
        for expression in READY:
            await page.wait_for(expression, timeout=30)
        await asyncio.sleep(2)  # the charts' last frames
        await page.screenshot(out)
        problems = page.problems()
        if problems:
            print("the page reported:", *problems, sep="\n  ", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    args = parser.parse_args()
    if not chromium.available():
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="fxflow-shot-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        proc, url = serve(work / "demo", work / "fxrun.log")
        try:
            asyncio.run(shoot(url, args.out, work / "chromium"))
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(60)
        print(f"wrote {args.out} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
