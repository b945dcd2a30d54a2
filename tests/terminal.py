"""Run a program on a pseudo-terminal of its own, as from an interactive shell."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Mapping, Sequence


def converse(argv: Sequence[str], env: Mapping[str, str], prompt: bytes, reply: bytes,
             until: bytes, timeout: float = 60) -> tuple[int, bytes]:
    """Start `argv` in a session of its own whose controlling terminal is a new pty
    (`setsid -c`); write `reply` once `prompt` appeared; read until `until` appeared.
    Returns (exit status, everything it wrote)."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(["setsid", "-c", *argv], stdin=secondary, stdout=secondary, stderr=secondary,
                            env=dict(env))
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + timeout
    sent = False
    try:
        while time.monotonic() < deadline and until not in output:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    output += os.read(primary, 1024)
                except OSError:
                    break
            if prompt in output and not sent:
                os.write(primary, reply)
                sent = True
        return proc.wait(timeout=timeout), output
    finally:
        os.close(primary)


class Screen:
    """A full-screen program on a pty of its own, its output rendered by a terminal
    emulator (pyte), so a test reads the screen as a person would see it."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None = None,
                 columns: int = 120, lines: int = 40) -> None:
        import fcntl
        import struct
        import termios

        import pyte

        self.screen = pyte.Screen(columns, lines)
        self._stream = pyte.ByteStream(self.screen)
        self.primary, secondary = pty.openpty()
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.proc = subprocess.Popen(["setsid", "-c", *argv], stdin=secondary, stdout=secondary,
                                     stderr=secondary, env={**env, "TERM": "xterm-256color"}, cwd=cwd)
        os.close(secondary)
        self.transcript = b""

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def flat(self) -> str:
        """The screen as one line of words: a line that fills the width continues on the
        next (the program's text wrapped there), any other line ends a word."""
        out = ""
        for line in self.screen.display:
            out += line if len(line.rstrip()) == self.screen.columns else line.rstrip() + " "
        return " ".join(out.split())

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.primary], [], [], wait)
        if not ready:
            return True
        try:
            data = os.read(self.primary, 65536)
        except OSError:
            return False  # the program is gone
        self.transcript += data
        self._stream.feed(data)
        return bool(data)

    def wait_for(self, *texts: str, timeout: float = 60) -> str:
        """Read until one of `texts` is on the screen; that text. Raises TimeoutError
        with the screen when none shows up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for text in texts:
                if text in self.text():
                    return text
            if not self._read(0.2):
                break
        raise TimeoutError(f"none of {texts} appeared; the screen:\n{self.text()}")

    def settle(self, quiet: float = 1.0, timeout: float = 15) -> None:
        """Read until the program has written nothing for `quiet` seconds (a TUI redraws
        in pieces: a screen read mid-redraw is half old, half new)."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet:
            before = len(self.transcript)
            if not self._read(0.1):
                return
            if len(self.transcript) != before:
                last = time.monotonic()

    def shows(self, text: str, within: float) -> bool:
        """Whether `text` is on the screen, or comes within `within` seconds."""
        try:
            self.wait_for(text, timeout=within)
        except TimeoutError:
            return False
        return True

    def send(self, keys: bytes) -> None:
        os.write(self.primary, keys)

    def stop(self) -> None:
        """If it still runs: SIGTERM (httpjail then cleans up), SIGKILL after 10 s. Then
        the pty is closed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.primary >= 0:
            os.close(self.primary)
            self.primary = -1

    def finish(self, timeout: float = 60) -> int:
        """Read until the program ends; its exit status."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        return self.proc.wait(timeout=max(deadline - time.monotonic(), 1))
