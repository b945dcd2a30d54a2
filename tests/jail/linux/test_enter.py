"""enter.py, the last step before the command, on its own: a signal that arrived while it
was starting (httpjail starts it with the forwarded signals blocked) ends it as it would
have ended the command, and the command never runs."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from httpjail_py.jail.linux.strong import ENTER_SCRIPT
from tests.jail.linux.conftest import strong_capability

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(strong_capability() is not None, reason=str(strong_capability())),
]

# Blocks SIGINT, sends it to itself (pending now), then becomes enter.py: as if httpjail's
# signal had arrived while the interpreter of enter.py was starting.
PENDING = """
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
os.kill(os.getpid(), signal.SIGINT)
os.execv(sys.executable, [sys.executable, "-I", "-S", *sys.argv[1:]])
"""


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name = f"hjenter{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    yield name, resolv
    subprocess.run(["ip", "netns", "del", name], check=True)


def test_a_signal_pending_at_start_ends_it_before_the_command(
    netns: tuple[str, Path], tmp_path: Path
) -> None:
    name, resolv = netns
    marker = tmp_path / "ran"
    result = subprocess.run(
        [sys.executable, "-c", PENDING, str(ENTER_SCRIPT), "--netns", name, "--resolv", str(resolv),
         "--", "touch", str(marker)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == -signal.SIGINT, result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_without_a_signal_the_command_runs_with_signals_unblocked(netns: tuple[str, Path]) -> None:
    name, resolv = netns
    blocking = "import signal; signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM]); "
    result = subprocess.run(
        [sys.executable, "-c", blocking + PENDING.replace("os.kill(os.getpid(), signal.SIGINT)\n", ""),
         str(ENTER_SCRIPT), "--netns", name, "--resolv", str(resolv), "--",
         "grep", "SigBlk", "/proc/self/status"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[1], 16) == 0
