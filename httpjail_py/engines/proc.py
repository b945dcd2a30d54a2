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
dead process's leftovers (a late line, its EOF) can only ever reach its own requests. Its
stdout is a pipe read by a protocol (`_Answers`) that answers the waiting request in the
callback that received the line: a reader task, and asyncio's subprocess pipes (which
hand each chunk on with `call_soon`), cost each decision two more turns of the event
loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
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
# One encoder for every request line: `json.dumps` with options builds a new one per call.
_REQUEST_ENCODER = json.JSONEncoder(separators=(",", ":"))
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
        self.stdin: asyncio.WriteTransport | None = None
        self.stdout: asyncio.ReadTransport | None = None
        # Each waiting request with its deadline (loop time); answers come in this order.
        self.waiting: collections.deque[tuple[asyncio.Future[str | None], float]] = collections.deque()
        self.watchdog: asyncio.TimerHandle | None = None
        self.failed: str | None = None
        self.after_eof: asyncio.Task[None] | None = None


class _Answers(asyncio.Protocol):
    """The process's stdout, cut into lines, each handed to the engine as it comes."""

    def __init__(self, engine: ProcEngine, worker: _Worker) -> None:
        self._engine = engine
        self._worker = worker
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        worker = self._worker
        if worker.failed is not None:
            return  # killed meanwhile: whatever it still wrote belongs to no one
        self._buffer += data
        while worker.failed is None and (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._engine._answered(worker, line)
        if worker.failed is None and len(self._buffer) > _MAX_LINE:
            self._engine._fail(worker, "it answered a line over 1 MiB")

    def connection_lost(self, exc: Exception | None) -> None:
        worker = self._worker
        if worker.failed is None:
            # EOF (a partial last line is not an answer): give it a moment to exit, so
            # the reason can say how.
            worker.after_eof = asyncio.get_running_loop().create_task(self._engine._ended(worker))


class _Requests(asyncio.Protocol):
    """The process's stdin: closed under our writes, it fails the process."""

    def __init__(self, engine: ProcEngine, worker: _Worker) -> None:
        self._engine = engine
        self._worker = worker

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._engine._fail(self._worker, "its stdin is closed")


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
        line = (_REQUEST_ENCODER.encode(request.as_rule_input()) + "\n").encode()
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
        # A missed deadline fails the process, which answers every waiter with None. One
        # timer per process, not one per request: each decision pays for what it sets up
        # here. A process that stops reading is caught by it too (the lines it does not
        # read wait in the transport's buffer until it is killed).
        deadline = loop.time() + self._timeout
        worker.waiting.append((answer, deadline))
        if worker.watchdog is None:
            worker.watchdog = loop.call_at(deadline, self._watch, worker)
        assert worker.stdin is not None
        worker.stdin.write(line)
        text = await answer  # if the caller is cancelled, its answer is skipped
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
                # It died and its EOF has not come yet: fail it now, so its waiters are
                # retried and the restart backs off.
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
            return await self._start()

    async def _start(self) -> _Worker:
        """Start the process, with pipes of our own on its stdin and stdout (module doc)."""
        loop = asyncio.get_running_loop()
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        ours = [stdin_w, stdout_r]
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._argv,
                    stdin=stdin_r,
                    stdout=stdout_w,
                    # Its own process group: a restart kills whatever it started too, and
                    # a Ctrl-C at the terminal reaches httpjail, which stops it in order.
                    start_new_session=True,
                )
            finally:
                os.close(stdin_r)
                os.close(stdout_w)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        worker = _Worker(proc)
        try:
            writing = open(stdin_w, "wb", buffering=0, closefd=True)  # noqa: SIM115 (the transport owns it)
            ours.remove(stdin_w)
            worker.stdin, _ = await loop.connect_write_pipe(lambda: _Requests(self, worker), writing)
            reading = open(stdout_r, "rb", buffering=0, closefd=True)  # noqa: SIM115 (as above)
            ours.remove(stdout_r)
            worker.stdout, _ = await loop.connect_read_pipe(lambda: _Answers(self, worker), reading)
        except BaseException:
            # Cancelled (its first request was) or failed: the process must not outlive it.
            for fd in ours:
                os.close(fd)
            self._fail(worker, "it could not be connected")
            raise
        self._worker = worker
        return worker

    def _watch(self, worker: _Worker) -> None:
        """The watchdog: fail `worker` if its oldest request is past its deadline, else
        look again at that deadline."""
        worker.watchdog = None
        if worker.failed is not None or not worker.waiting:
            return
        loop = asyncio.get_running_loop()
        oldest = worker.waiting[0][1]
        if loop.time() >= oldest:
            self._fail(worker, f"it gave no answer within {self._timeout:g} s")
        else:
            worker.watchdog = loop.call_at(oldest, self._watch, worker)

    def _answered(self, worker: _Worker, raw: bytes) -> None:
        """One line from `worker`'s process: the answer to its oldest waiting request."""
        text = raw.decode(errors="replace").rstrip("\r")
        if not text.strip():
            self._fail(worker, "it answered an empty line")
        elif not worker.waiting:
            self._fail(worker, f"it answered a request it was not asked: {text[:100]!r}")
        else:
            waiter, _ = worker.waiting.popleft()
            if not waiter.done():
                waiter.set_result(text)

    async def _ended(self, worker: _Worker) -> None:
        """`worker`'s stdout is closed: fail it, naming its exit status if it comes soon."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(worker.proc.wait()), _EXIT_GRACE)
        status = worker.proc.returncode
        self._fail(worker, "it closed its stdout" if status is None else _exited(status))

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
        if worker.stdin is not None:
            worker.stdin.close()
        if worker.watchdog is not None:
            worker.watchdog.cancel()
            worker.watchdog = None
        while worker.waiting:
            waiter, _ = worker.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
        reaper = asyncio.get_running_loop().create_task(self._reap(worker))
        self._reaping.add(reaper)
        reaper.add_done_callback(self._reaping.discard)

    @staticmethod
    async def _reap(worker: _Worker) -> None:
        """Wait for a killed process to exit, then let go of its stdout."""
        await worker.proc.wait()
        if worker.after_eof is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await worker.after_eof
        if worker.stdout is not None:
            worker.stdout.close()

    async def aclose(self) -> None:
        """Close the process's stdin, give it a second to exit, then kill it."""
        self._closed = True
        worker = self._worker
        if worker is not None and worker.proc.returncode is None and worker.stdin is not None:
            worker.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(worker.proc.wait()), 1.0)
        if worker is not None:
            self._fail(worker, "it was stopped: httpjail is shutting down")
        if self._reaping:
            await asyncio.wait(self._reaping, timeout=2.0)


def _exited(status: int) -> str:
    return f"it was killed by signal {-status}" if status < 0 else f"it exited with status {status}"
