"""The server's life beside its editor: stop the work when the editor shuts the server down,
and stop the server when the editor is gone (killed, crashed) without saying so.

An editor that dies leaves the server an orphan: its stdin closes (pygls then stops serving) or,
where the pipe stays open, only the editor's process id tells. `watch_client` polls that id (the
`processId` of initialize, as the protocol intends) and calls back once it is gone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable

from sera.agent.workcopy import process_alive

POLL_SECONDS = 1.0


def watch_client(pid: int, on_gone: Callable[[], None]) -> threading.Thread:
    """A daemon thread that calls `on_gone` (once) when process `pid` no longer exists."""
    def watch() -> None:
        while process_alive(pid):
            time.sleep(POLL_SECONDS)
        on_gone()
    thread = threading.Thread(target=watch, name=f"sera-watch-{pid}", daemon=True)
    thread.start()
    return thread


def cancel_other_requests(protocol: Any, shutdown: Any) -> None:
    """Cancel the requests in flight but the shutdown (its id `shutdown`), over a copy of pygls'
    table: pygls 2.1 cancels them while iterating the table, and a cancelled request's callback
    removes it from the table, which raised "dictionary changed size during iteration" in the
    shutdown of a server with an offer waiting for the user."""
    # The calling handler runs as a task of its own in that table: it must not cancel itself.
    itself = asyncio.current_task()
    for msg_id, future in list(getattr(protocol, "_request_futures", {}).items()):
        if msg_id != shutdown and future is not itself and not future.done():
            future.cancel()
