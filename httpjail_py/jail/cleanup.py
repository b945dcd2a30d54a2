"""An undo stack: the steps that take back, in reverse order, what a setup has made.

A setup pushes one step right after each resource it makes exists, so that a failure half
way leaves exactly the steps for what was made. `run()` runs them newest first, each on its
own: a failing step is logged as a warning and never keeps the others from running.

Synchronous on purpose: a caller on an event loop runs `run()` in a thread.

Example::

    undo = UndoStack()
    try:
        make_netns(name)
        undo.push(f"remove netns {name}", lambda: remove_netns(name))
        ...
    except BaseException:
        undo.run()
        raise
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["UndoStack"]

log = logging.getLogger("httpjail.cleanup")


class UndoStack:
    """Cleanup steps, run newest first, each at most once."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []
        self._lock = threading.Lock()

    def push(self, description: str, fn: Callable[[], object]) -> None:
        """Register `fn` to be run by `run()`; `description` names it in warnings."""
        with self._lock:
            self._steps.append((description, fn))

    def __len__(self) -> int:
        with self._lock:
            return len(self._steps)

    def run(self) -> None:
        """Run every step pushed so far, newest first, then forget them.

        A step that raises is logged (with its traceback) as a warning and the next one
        still runs. A second call runs only steps pushed since the first (none, normally).
        """
        with self._lock:
            steps, self._steps = self._steps, []
        for description, fn in reversed(steps):
            try:
                fn()
            except Exception:
                log.warning("cleanup step failed: %s", description, exc_info=True)
