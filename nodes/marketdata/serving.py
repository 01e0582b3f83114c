"""Running a simulator on its own from the command line (``python -m nodes.<node>.simulator``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


def serve_until_interrupted(start: Callable[[], Awaitable[str]], stop: Callable[[], Awaitable[None]], banner: str) -> int:
    """Start a simulator, print ``banner`` (``{url}`` is filled in) and serve until Ctrl-C."""

    async def serve() -> None:
        url = await start()
        print(banner.format(url=url), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0
