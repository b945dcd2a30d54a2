"""`--sh SCRIPT`: one process per request, as in httpjail.

A SCRIPT with a space runs as `sh -c SCRIPT`; otherwise it is executed directly. It gets
httpjail's environment plus HTTPJAIL_URL, _METHOD, _SCHEME, _HOST, _PATH, _REQUESTER_IP
(httpjail's) and HTTPJAIL_PORT, HTTPJAIL_QUERY, HTTPJAIL_IP (ours; see `RequestInfo.ip`).
Exit 0 allows; any other status denies, with the trimmed stdout as the message (exit 1
with no output is a plain `false`; another status with no output names the status). A
script killed by a signal, one past the rule timeout (killed with its whole process
group), and one that cannot start deny as rule errors.

The verdict is the script's exit: whatever it leaves running in its process group is
killed then, so a background job that inherited stdout cannot hold the request up.

Runs as asyncio subprocesses, so the proxy's loop keeps serving while scripts run; at
most `max_concurrent` run at once, the rest wait their turn (inside the same timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping

from httpjail_py.engines.base import Decision, RequestInfo
from httpjail_py.engines.result import MAX_MESSAGE
from httpjail_py.procgroup import signal_group

__all__ = ["ShellEngine", "request_env"]

DEFAULT_TIMEOUT = 30.0
MAX_CONCURRENT = 16
# After the script exits, how long output still in the pipe may take to arrive. Only a
# helper that left the script's process group (setsid) can hold the pipe open that long.
_OUTPUT_GRACE = 0.5
_EXIT_POLL = 0.05


def request_env(request: RequestInfo, base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(
        HTTPJAIL_URL=request.url,
        HTTPJAIL_METHOD=request.method,
        HTTPJAIL_SCHEME=request.scheme,
        HTTPJAIL_HOST=request.host,
        HTTPJAIL_PATH=request.path,
        HTTPJAIL_REQUESTER_IP=request.requester_ip,
        HTTPJAIL_PORT=str(request.port),
        HTTPJAIL_QUERY=request.query,
        HTTPJAIL_IP=request.ip,
    )
    return env


class ShellEngine:
    name = "sh"
    reads_address = True  # a script's reads cannot be seen from here

    def __init__(
        self, script: str, *, timeout: float = DEFAULT_TIMEOUT, max_concurrent: int = MAX_CONCURRENT
    ) -> None:
        self._argv = ["sh", "-c", script] if " " in script else [script]
        self._timeout = timeout
        self._max_concurrent = max_concurrent
        self._slots = asyncio.Semaphore(max_concurrent)
        self._groups: set[int] = set()  # process groups of the scripts running now

    async def evaluate(self, request: RequestInfo) -> Decision:
        started: list[int] = []  # the script's pid, once it runs
        try:
            async with asyncio.timeout(self._timeout):
                return await self._run(request, started)
        except TimeoutError:
            if not started:
                return Decision.error(
                    f"rule script did not get to run within {self._timeout:g} s: "
                    f"{self._max_concurrent} scripts were already running"
                )
            return Decision.error(f"rule script gave no verdict within {self._timeout:g} s (killed)")
        except OSError as e:
            return Decision.error(f"rule script {self._argv[0]!r} could not start: {e.strerror or e}")
        except ValueError as e:  # e.g. a NUL byte in an argument or environment value
            return Decision.error(f"rule script could not start: {e}")

    async def _run(self, request: RequestInfo, started: list[int]) -> Decision:
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                *self._argv,
                env=request_env(request, os.environ),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills all of it
            )
            started.append(proc.pid)
            self._groups.add(proc.pid)
            assert proc.stdout is not None
            kept = bytearray()
            reader = asyncio.get_running_loop().create_task(_read_into(proc.stdout, kept))
            try:
                # Process.wait() returns only once stdout is closed too (Python 3.12), which
                # a background job that inherited it can put off for as long as it runs.
                # So: the end of the output, or else the exit status seen by polling.
                while proc.returncode is None and not reader.done():
                    await asyncio.wait({reader}, timeout=_EXIT_POLL)
                status = proc.returncode if proc.returncode is not None else await proc.wait()
                signal_group(proc.pid, signal.SIGKILL)  # what it left behind, which may hold stdout open
                await asyncio.wait({reader}, timeout=_OUTPUT_GRACE)
            finally:
                # On a timeout (cancellation) too: the whole group goes, then is reaped.
                reader.cancel()
                signal_group(proc.pid, signal.SIGKILL)
                self._groups.discard(proc.pid)
                if proc.returncode is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proc.wait(), 1.0)
        return _verdict(status, bytes(kept))

    async def aclose(self) -> None:
        """Kill every script still running (their requests deny)."""
        for pgid in list(self._groups):
            signal_group(pgid, signal.SIGKILL)


async def _read_into(stream: asyncio.StreamReader, kept: bytearray) -> None:
    # Read to EOF (a script blocked on a full pipe would never exit), keep the start.
    while chunk := await stream.read(65536):
        if len(kept) < MAX_MESSAGE * 4:
            kept += chunk


def _verdict(status: int, output: bytes) -> Decision:
    message = output.decode(errors="replace").strip()[:MAX_MESSAGE] or None
    if status == 0:
        return Decision.allow()
    if status < 0:
        return Decision.error(f"rule script was killed by signal {-status}")
    if message is None and status != 1:
        message = f"rule script exited with status {status}"
    return Decision.deny(message)
