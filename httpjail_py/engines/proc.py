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

Each process is a `_Worker` that owns the queue of requests waiting for its answers, so a
dead process's leftovers (a late line, its EOF) can only ever reach its own requests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import shlex
import shutil
import signal

from httpjail_py.engines.base import Decision, RequestInfo
from httpjail_py.engines.result import parse_answer_line
from httpjail_py.errors import RuleError
from httpjail_py.procgroup import signal_group

__all__ = ["ProcEngine"]

log = logging.getLogger("httpjail.rules")

DEFAULT_TIMEOUT = 5.0
MAX_BACKOFF = 5.0
_MAX_LINE = 1 << 20
# How long a process that closed its stdout gets to exit, so the reason can name its status.
_EXIT_GRACE = 0.5


class _ProcessFailed(Exception):
    """The rule process failed while a request waited for it; the text says how."""


class _Worker:
    """One running rule process and the requests waiting for its answers, oldest first.

    A waiter's result is the answer line, or None when the process failed (`failed`
    then says why). Results rather than exceptions: a waiter whose request was cancelled
    is never awaited again, and an unretrieved exception would be reported as a bug.
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.waiting: collections.deque[asyncio.Future[str | None]] = collections.deque()
        self.failed: str | None = None
        self.reader: asyncio.Task[None] | None = None


class ProcEngine:
    name = "proc"
    reads_address = True  # a program's reads cannot be seen from here

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
        self._worker: _Worker | None = None
        self._starting = asyncio.Lock()
        self._failures = 0  # consecutive, for the restart backoff
        self._closed = False
        self._reaping: set[asyncio.Task[None]] = set()  # killed processes, until they are gone

    async def evaluate(self, request: RequestInfo) -> Decision:
        line = (json.dumps(request.as_rule_input(), separators=(",", ":")) + "\n").encode()
        problems: list[str] = []
        while len(problems) < 2 and not self._closed:
            try:
                answer = await self._ask(line)
            except _ProcessFailed as e:
                problems.append(str(e))
                continue
            except OSError as e:
                self._failures += 1
                problems.append(f"it could not start: {e.strerror or e}")
                continue
            self._failures = 0
            return parse_answer_line(answer)
        if not problems:
            return Decision.error("rule process: it is not running: httpjail is shutting down")
        if len(problems) == 1:
            return Decision.error(f"rule process: {problems[0]}")
        return Decision.error(f"rule process failed: {problems[0]}; after a restart: {problems[1]}")

    async def _ask(self, line: bytes) -> str:
        """Send one request line and return the answer line.

        Raises _ProcessFailed (saying why) when the process fails meanwhile, and OSError
        when it cannot be started."""
        worker = self._worker
        if worker is None or worker.proc.returncode is not None:
            worker = await self._running()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str | None] = loop.create_future()
        worker.waiting.append(answer)
        stdin = worker.proc.stdin
        assert stdin is not None
        # The deadline fails the process, which answers every waiter with None. A plain
        # timer, not asyncio.timeout/shield: each decision pays for what it sets up here.
        # The write is under it too: a process that stops reading fills the pipe.
        why = f"it gave no answer within {self._timeout:g} s"
        deadline = loop.call_later(self._timeout, self._fail, worker, why)
        try:
            stdin.write(line)
            await stdin.drain()
            text = await answer  # if the caller is cancelled, the reader skips this answer
        except (BrokenPipeError, ConnectionResetError):
            self._fail(worker, "its stdin is closed")
            text = answer.result() if answer.done() and not answer.cancelled() else None
        finally:
            deadline.cancel()
        if text is None:
            raise _ProcessFailed(worker.failed or "it failed")
        return text

    async def _running(self) -> _Worker:
        """The live worker, starting one (after the backoff) when there is none.

        Raises OSError when the program cannot be started, _ProcessFailed when httpjail
        is shutting down."""
        async with self._starting:
            worker = self._worker
            if worker is not None and worker.proc.returncode is not None:
                # It died and its reader has not seen the EOF yet: fail it now, so its
                # waiters are retried and the restart backs off.
                self._fail(worker, _exited(worker.proc.returncode))
            if self._worker is not None:
                return self._worker
            if self._closed:
                raise _ProcessFailed("it is not running: httpjail is shutting down")
            if self._failures:
                delay = min(0.1 * 2 ** (self._failures - 1), MAX_BACKOFF)
                log.warning("restarting rule process %s in %.1f s", self._argv[0], delay)
                await asyncio.sleep(delay)
                if self._closed:
                    raise _ProcessFailed("it is not running: httpjail is shutting down")
            proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=_MAX_LINE,
                # Its own process group: a restart kills whatever it started too, and a
                # Ctrl-C at the terminal reaches httpjail, which stops it in order.
                start_new_session=True,
            )
            worker = _Worker(proc)
            worker.reader = asyncio.get_running_loop().create_task(self._read_answers(worker))
            self._worker = worker
            return worker

    async def _read_answers(self, worker: _Worker) -> None:
        stdout = worker.proc.stdout
        assert stdout is not None
        while worker.failed is None:
            try:
                raw = await stdout.readline()
            except ValueError:  # a line over _MAX_LINE
                self._fail(worker, "it answered a line over 1 MiB")
                return
            if worker.failed is not None:
                return  # killed meanwhile: whatever it still wrote belongs to no one
            if not raw.endswith(b"\n"):
                # EOF (a partial last line is not an answer). Give it a moment to exit,
                # so the reason can say how.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(worker.proc.wait()), _EXIT_GRACE)
                status = worker.proc.returncode
                self._fail(worker, "it closed its stdout" if status is None else _exited(status))
                return
            text = raw.decode(errors="replace").rstrip("\r\n")
            if not text.strip():
                self._fail(worker, "it answered an empty line")
                return
            if not worker.waiting:
                self._fail(worker, f"it answered a request it was not asked: {text[:100]!r}")
                return
            waiter = worker.waiting.popleft()
            if not waiter.done():
                waiter.set_result(text)

    def _fail(self, worker: _Worker, why: str) -> None:
        """Kill `worker`'s process (and its group) and fail every request waiting on it,
        each of which its caller retries once. Idempotent."""
        if worker.failed is not None:
            return
        worker.failed = why
        if self._worker is worker:
            self._worker = None
            if not self._closed:
                self._failures += 1
                log.warning("rule process %s failed: %s", self._argv[0], why)
        signal_group(worker.proc.pid, signal.SIGKILL)
        if worker.proc.stdin is not None:
            worker.proc.stdin.close()
        while worker.waiting:
            waiter = worker.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
        reaper = asyncio.get_running_loop().create_task(self._reap(worker))
        self._reaping.add(reaper)
        reaper.add_done_callback(self._reaping.discard)

    @staticmethod
    async def _reap(worker: _Worker) -> None:
        """Wait for a killed process to exit and its reader to see the end of its output."""
        await worker.proc.wait()
        if worker.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await worker.reader

    async def aclose(self) -> None:
        """Close the process's stdin, give it a second to exit, then kill it."""
        self._closed = True
        worker = self._worker
        if worker is not None and worker.proc.returncode is None and worker.proc.stdin is not None:
            worker.proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(worker.proc.wait()), 1.0)
        if worker is not None:
            self._fail(worker, "it was stopped: httpjail is shutting down")
        if self._reaping:
            await asyncio.wait(self._reaping, timeout=2.0)


def _exited(status: int) -> str:
    return f"it was killed by signal {-status}" if status < 0 else f"it exited with status {status}"
