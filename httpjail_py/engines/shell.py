"""`--sh SCRIPT`: one process per request, as in httpjail.

A SCRIPT with a space runs as `sh -c SCRIPT`; otherwise it is executed directly. It gets
httpjail's environment plus HTTPJAIL_URL, _METHOD, _SCHEME, _HOST, _PATH, _REQUESTER_IP
(httpjail's) and HTTPJAIL_PORT, HTTPJAIL_QUERY (ours). Exit 0 allows; any other status
denies, with the trimmed stdout as the message. A script past the rule timeout is killed
with its whole process group and denies; one that cannot start denies with the OS error.

Runs as asyncio subprocesses, so the proxy's loop keeps serving while scripts run; at
most `max_concurrent` run at once, the rest wait their turn (inside the same timeout).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping

from httpjail_py.engines.base import Decision, RequestInfo
from httpjail_py.engines.result import MAX_MESSAGE

__all__ = ["ShellEngine", "request_env"]

DEFAULT_TIMEOUT = 30.0
MAX_CONCURRENT = 16


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
    )
    return env


class ShellEngine:
    name = "sh"

    def __init__(
        self, script: str, *, timeout: float = DEFAULT_TIMEOUT, max_concurrent: int = MAX_CONCURRENT
    ) -> None:
        self._argv = ["sh", "-c", script] if " " in script else [script]
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_concurrent)

    async def evaluate(self, request: RequestInfo) -> Decision:
        try:
            return await asyncio.wait_for(self._run(request), self._timeout)
        except TimeoutError:
            return Decision.error(f"rule script gave no verdict within {self._timeout:g} s (killed)")
        except OSError as e:
            return Decision.error(f"rule script could not start: {e.strerror or e}")

    async def _run(self, request: RequestInfo) -> Decision:
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                *self._argv,
                env=request_env(request, os.environ),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills all of it
            )
            try:
                assert proc.stdout is not None
                kept = bytearray()
                # Read to EOF (a script blocked on a full pipe would never exit), keep the start.
                while chunk := await proc.stdout.read(65536):
                    if len(kept) < MAX_MESSAGE * 4:
                        kept += chunk
                status = await proc.wait()
            finally:
                # On a timeout (cancellation), and after a normal exit: whatever it left
                # running in its group goes too.
                _kill_group(proc.pid)
        message = bytes(kept).decode(errors="replace").strip()[:MAX_MESSAGE] or None
        if status == 0:
            return Decision.allow()
        if message is None:
            how = f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
            message = f"rule script {how}"
        return Decision.deny(message)

    async def aclose(self) -> None:
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
