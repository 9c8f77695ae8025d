"""One projector process's pipes, for adapters/projector_process.py (see
adapters/framedchild.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from adapters.framedchild import FramedChild

log = logging.getLogger("shoal.projector")


class FrameSink(Protocol):
    """Who reads the process's frames."""

    def on_frame(self, child: ProjectorChild, body: bytes) -> None:
        """One frame's body, as it came."""


class ProjectorChild(FramedChild):
    """One projector process: its frames go to ``owner``; ``ready`` is set by its
    ``ready`` frame."""

    def __init__(self, owner: FrameSink, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, "the projector process", log)
        self._owner = owner
        self.ready.add_done_callback(_retrieved)
        self.ready_at = 0.0
        self.error = ""  # the last error it reported
        self.stalled_s = 0.0  # killed by the watchdog after this long without a frame

    def on_body(self, body: bytes) -> None:
        """A frame: the owner reads it."""
        self._owner.on_frame(self, body)


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # read by _spawn; nothing is left unretrieved
