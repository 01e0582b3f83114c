"""Headless Chromium for tests, driven over the DevTools protocol (no browser download, no extra package).

Debian's ``chromium`` with the flags this closed network needs; the protocol goes over a
websocket with aiohttp's client. A :class:`Page` records what a test asserts on: JavaScript
dialogs (dismissed at once), console messages, log entries (CSP violations land there) and
uncaught exceptions::

    async with Browser.launch(tmp_path / "chromium") as browser:
        page = await browser.page()
        await page.goto(url)
        await page.wait_for("document.title === 'fxflow dashboard'")
        await page.screenshot(tmp_path / "page.png")
        assert not page.dialogs
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = os.environ.get("FXFLOW_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
    "--hide-scrollbars", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)  # fmt: skip


def available() -> bool:
    return Path(CHROMIUM).exists()


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.dialogs: list[dict[str, Any]] = []
        self.console: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self.exceptions: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(f"DevTools: {data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Page.javascriptDialogOpening":
                self.dialogs.append(params)
                asyncio.ensure_future(self.send("Page.handleJavaScriptDialog", accept=False))
            elif method == "Runtime.consoleAPICalled":
                self.console.append(params)
            elif method == "Log.entryAdded":
                self.log.append(params.get("entry", {}))
            elif method == "Runtime.exceptionThrown":
                self.exceptions.append(params.get("exceptionDetails", {}))

    async def send(self, method: str, **params: Any) -> Any:
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        return await asyncio.wait_for(future, 30)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0, every: float = 0.01) -> Any:
        """The value of ``expression`` once truthy (polled every ``every`` s); TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                value = await self.eval(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"not true within {timeout}s: {expression}")
            await asyncio.sleep(every)

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def problems(self) -> list[str]:
        """Console errors, error log entries (CSP violations among them) and uncaught exceptions."""
        out = [f"exception: {e.get('text')} {e.get('exception', {}).get('description', '')}" for e in self.exceptions]
        out += [f"log {e.get('source')}: {e.get('text')}" for e in self.log if e.get("level") == "error"]
        out += [f"console.{c.get('type')}: {[a.get('value', a.get('description')) for a in c.get('args', [])]}"
                for c in self.console if c.get("type") in ("error", "assert")]  # fmt: skip
        return out

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._ws.close()


class Browser:
    def __init__(self, process: subprocess.Popen[bytes], port: int, session: aiohttp.ClientSession) -> None:
        self.process = process
        self.port = port
        self.session = session
        self.pages: list[Page] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, user_data_dir: Path, width: int = 1500, height: int = 1400) -> AsyncIterator[Browser]:
        user_data_dir.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        session = aiohttp.ClientSession()
        try:
            port_file = user_data_dir / "DevToolsActivePort"
            for _ in range(300):
                if port_file.exists() and port_file.read_text().strip():
                    break
                if process.poll() is not None:
                    raise RuntimeError(f"chromium exited with {process.returncode}")
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError("chromium did not open its DevTools port")
            browser = cls(process, int(port_file.read_text().split()[0]), session)
            yield browser
        finally:
            for page in getattr(locals().get("browser"), "pages", []):
                with contextlib.suppress(Exception):
                    await page.close()
            await session.close()
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    async def page(self) -> Page:
        """The first tab, with dialogs, console, log and exceptions recorded."""
        async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as response:
            targets = await response.json(content_type=None)
        target = next(t for t in targets if t.get("type") == "page")
        ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        self.pages.append(page)
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        return page
