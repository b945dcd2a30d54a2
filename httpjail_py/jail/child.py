"""Run the jailed command: its own process group, the terminal handed to it, signals
forwarded, a timeout enforced, and its exit status mapped as httpjail does.

Exit status: the child's own; 128+N when a signal N killed it; 124 on `--timeout`;
127 when the command does not exist, 126 when it cannot be executed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

from httpjail_py.jail.signals import HANDLED, hold_signals, on_signals
from httpjail_py.procgroup import signal_group

__all__ = ["run_child", "TIMEOUT_EXIT", "KILL_GRACE_SECONDS"]

log = logging.getLogger("httpjail")

TIMEOUT_EXIT = 124
KILL_GRACE_SECONDS = 3.0


def _terminal_fd() -> int | None:
    """stdin's fd when it is a terminal whose foreground group is ours, else None."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:
        pass
    return None


def _give_terminal(fd: int, pgid: int) -> None:
    # tcsetpgrp from a background group raises SIGTTOU; we are not one at that moment,
    # but the child is, until the call succeeds.
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def _child_setup(tty: int | None, held: bool) -> None:
    """Runs in the child between fork and exec: own process group, the terminal if any."""
    os.setpgid(0, 0)
    if tty is not None:
        _give_terminal(tty, os.getpgrp())
    # An ignored signal stays ignored across exec; the command starts with the defaults.
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_DFL)
    if held:
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)


async def _stop_group(pgid: int, proc: asyncio.subprocess.Process, first: int) -> None:
    """Send `first` to the group, then SIGKILL whatever is left after a grace period."""
    signal_group(pgid, first)
    try:
        await asyncio.wait_for(proc.wait(), KILL_GRACE_SECONDS)
    except TimeoutError:
        pass
    signal_group(pgid, signal.SIGKILL)


def exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


async def run_child(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float | None = None,
    held: bool = False,
    started: Callable[[], object] | None = None,
) -> int:
    """Run `argv` to completion and return httpjail's exit status for it.

    `held`: start it with the forwarded signals blocked, for a program that unblocks them
    once it is ready to die of them (enter.py, just before it becomes the command).
    `started` is called once it runs and signals are forwarded to it (not when it could
    not be started). Cancelled, it stops the command as at its end (see `finally`)."""
    tty = _terminal_fd()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=dict(env), preexec_fn=lambda: _child_setup(tty, held)
        )
    except (FileNotFoundError, NotADirectoryError):
        print(f"httpjail: command not found: {argv[0]}", file=sys.stderr, flush=True)
        return 127
    except OSError as e:
        # EACCES, ENOEXEC (no `#!` line, foreign binary), EISDIR...: the shells' 126.
        print(f"httpjail: cannot execute {argv[0]}: {e.strerror}", file=sys.stderr, flush=True)
        return 126
    pgid = proc.pid
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def forward(sig: int) -> None:
        log.info("received %s; passing it to the command", signal.Signals(sig).name)
        if not stopping:
            stopping.append(loop.create_task(_stop_group(pgid, proc, sig)))
        else:
            signal_group(pgid, sig)

    on_signals(forward)
    try:
        if started is not None:
            started()
        try:
            returncode = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            print(f"httpjail: --timeout of {timeout:g} s reached; stopping the command", file=sys.stderr)
            await _stop_group(pgid, proc, signal.SIGTERM)
            await proc.wait()
            return TIMEOUT_EXIT
        return exit_status(returncode)
    finally:
        # The command is gone; httpjail's own cleanup must not be cut short by a signal.
        hold_signals()
        for task in stopping:
            task.cancel()
        # Whatever the command left running in its group would outlive its jail. The rest
        # runs even if this task is cancelled during the grace (the proxy failed then).
        try:
            if signal_group(pgid, signal.SIGTERM):
                await asyncio.sleep(0.2)
        finally:
            signal_group(pgid, signal.SIGKILL)
            if tty is not None:
                with contextlib.suppress(OSError):
                    _give_terminal(tty, os.getpgrp())
