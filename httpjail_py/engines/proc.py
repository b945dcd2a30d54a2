"""`--proc PROGRAM`: one long-running rule process (httpjail's line processor).

PROGRAM is split like a shell command line (`--proc "python3 -u filter.py --strict"`).
For each request it reads one compact JSON line on stdin (the object JS rules see as
`r`) and answers one line on stdout, read by `parse_answer_line`: `true`, `false`, a JSON
object, or other text (a deny message). Its stderr is httpjail's stderr.

Unlike httpjail, requests are not serialised behind one lock: several may be in flight,
and the process must answer them **in the order it received them** (a line per request).
A request gets no answer within the timeout, the process closes stdout, prints an empty
line, or dies: the process is killed and restarted (after a backoff that grows with
consecutive failures, so a crashing filter is not restarted in a tight loop), every
request that was waiting is retried once on the new process, and denied if that fails.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import shlex
import shutil

from httpjail_py.engines.base import Decision, RequestInfo
from httpjail_py.engines.result import parse_answer_line
from httpjail_py.errors import RuleError

__all__ = ["ProcEngine"]

log = logging.getLogger("httpjail.rules")

DEFAULT_TIMEOUT = 5.0
MAX_BACKOFF = 5.0
_MAX_LINE = 1 << 20


class _ProcessFailed(Exception):
    """The rule process failed while a request waited for it."""


class ProcEngine:
    name = "proc"

    def __init__(self, command: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        try:
            self._argv = shlex.split(command)
        except ValueError as e:
            raise RuleError(f"--proc {command!r}: cannot split it into words: {e}") from None
        if not self._argv:
            raise RuleError("--proc needs a program")
        if shutil.which(self._argv[0]) is None:
            raise RuleError(f"--proc {command!r}: {self._argv[0]!r} is not an executable program")
        self._timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: collections.deque[asyncio.Future[str]] = collections.deque()
        self._starting = asyncio.Lock()
        self._failures = 0  # consecutive, for the restart backoff
        self._closed = False

    async def evaluate(self, request: RequestInfo) -> Decision:
        line = json.dumps(request.as_rule_input(), separators=(",", ":")) + "\n"
        problem = ""
        for _attempt in range(2):
            try:
                answer = await self._ask(line.encode())
            except _ProcessFailed as e:
                problem = str(e)
                continue
            except OSError as e:
                problem = f"could not start: {e.strerror or e}"
                continue
            self._failures = 0
            return parse_answer_line(answer)
        return Decision.error(f"rule process failed twice ({problem}); denied")

    async def _ask(self, line: bytes) -> str:
        proc = await self._running()
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        try:
            assert proc.stdin is not None
            proc.stdin.write(line)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            self._fail(proc, "its stdin is closed")
        try:
            return await asyncio.wait_for(asyncio.shield(answer), self._timeout)
        except TimeoutError:
            self._fail(proc, f"no answer within {self._timeout:g} s")
            return await answer  # raises the failure set just now

    async def _running(self) -> asyncio.subprocess.Process:
        async with self._starting:
            if self._proc is not None and self._proc.returncode is None:
                return self._proc
            if self._closed:
                raise _ProcessFailed("httpjail is shutting down")
            if self._failures:
                delay = min(0.1 * 2 ** (self._failures - 1), MAX_BACKOFF)
                log.warning("restarting rule process %s in %.1f s", self._argv[0], delay)
                await asyncio.sleep(delay)
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=_MAX_LINE,
            )
            self._reader = asyncio.get_running_loop().create_task(self._read_answers(self._proc))
            return self._proc

    async def _read_answers(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # a line over _MAX_LINE
                self._fail(proc, "it answered a line over 1 MiB")
                return
            if not raw:
                status = await proc.wait()
                self._fail(proc, f"it exited with status {status}")
                return
            text = raw.decode(errors="replace").rstrip("\r\n")
            if not text.strip():
                self._fail(proc, "it answered an empty line")
                return
            if not self._waiting:
                self._fail(proc, f"it answered a request it was not asked: {text[:100]!r}")
                return
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(text)

    def _fail(self, proc: asyncio.subprocess.Process, why: str) -> None:
        """Kill `proc` and fail everything waiting on it (each is retried by its caller)."""
        if proc is not self._proc:
            return  # already replaced
        log.warning("rule process %s failed: %s", self._argv[0], why)
        self._failures += 1
        self._proc = None
        if proc.returncode is None:
            proc.kill()
        waiting, self._waiting = self._waiting, collections.deque()
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(_ProcessFailed(why))

    async def aclose(self) -> None:
        self._closed = True
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 1.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
