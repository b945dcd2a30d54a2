"""What SIGINT, SIGTERM, SIGHUP and SIGQUIT do to httpjail, phase by phase.

    starting   the run is cancelled and unwound; httpjail exits 128+N (`app.run`)
    running    passed on to the command's process group (`child.run_child`), or, in
               server mode, a request to stop
    stopping   only logged: the proxy, the logs and the summary line are finished first,
               and the exit status stays the command's
    over       the process exits at once with the status it was about to exit with
               (`release_signals(then_exit=...)`)

Every phase installs its handlers over the previous phase's, so no moment is left where
one of these signals has its default effect: death with a status that is not the
command's, or a KeyboardInterrupt raised wherever the loop happens to be, half-way
through stopping the proxy or writing the logs.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

__all__ = ["HANDLED", "block_in_this_thread", "on_signals", "hold_signals", "release_signals"]

log = logging.getLogger("httpjail")

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def block_in_this_thread() -> None:
    """Keep HANDLED away from the calling thread: every thread but the main one calls it.

    The kernel hands a process-directed signal to any thread that does not block it, and
    `release_signals` can only block them in the main thread while it swaps handlers. A
    worker thread that took one in that moment would run its default effect.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)


def on_signals(handler: Callable[[int], object]) -> None:
    """From now on, each of HANDLED calls `handler(signum)` on the running loop."""
    loop = asyncio.get_running_loop()
    for sig in HANDLED:
        loop.add_signal_handler(sig, handler, sig)


def _held(sig: int) -> None:
    log.info("received %s while stopping; finishing the cleanup first", signal.Signals(sig).name)


def hold_signals() -> None:
    """The `stopping` phase: HANDLED signals are only logged until `release_signals`."""
    on_signals(_held)


def release_signals(*, then_exit: int | None = None) -> None:
    """Take HANDLED off the running loop.

    Without `then_exit` they get their default effect back. With it, the run is over and
    the process is about to exit with that status, which a late signal must not replace
    with its own: from now on each of them ends the process at once with it (`os._exit`:
    everything worth flushing is closed), and from the start of interpreter shutdown
    they are ignored, because Python then puts back the default of any signal that has a
    Python handler (but leaves SIG_IGN alone) and runs no more handlers.
    """
    loop = asyncio.get_running_loop()
    # Held back while the handlers change: `remove_signal_handler` puts back the default
    # (for SIGINT, a KeyboardInterrupt), which a signal arriving before `exit_now` is in
    # place would get. Unblocked, a pending one reaches the handler installed here.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        for sig in HANDLED:
            loop.remove_signal_handler(sig)
        if then_exit is None:
            return
        status = then_exit

        def exit_now(signum: int, frame: FrameType | None) -> None:
            os._exit(status)

        for sig in HANDLED:
            signal.signal(sig, exit_now)
        atexit.register(_ignore_handled)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _ignore_handled() -> None:
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_IGN)
