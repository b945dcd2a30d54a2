"""What the command runs inside the strong jail: servers on the jail's own loopback are
reached directly, and daemons it starts end with the jail."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import Jail
from tests.jail.linux.conftest import jail_id_of, leftovers, strong_capability
from tests.jail.linux.test_strong import strong
from tests.pids import alive

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(strong_capability() is not None, reason=str(strong_capability())),
]


def test_servers_on_the_jails_own_loopback_are_reached_directly(jail: Jail, tmp_path: Path) -> None:
    """NO_PROXY names the jail's own loopback (Codex's TUI talks to a local server of its
    own), so a client honouring the proxy variables reaches it there, not through the proxy."""
    request_log = tmp_path / "requests.log"
    serve = f"{sys.executable} -m http.server 8765 --bind 127.0.0.1 >/dev/null 2>&1 &"
    fetch = "curl -sS --retry 20 --retry-connrefused --retry-delay 0 -o /dev/null -w '%{http_code}' "
    result = strong(jail, ["--request-log", str(request_log), "--js", "false"],
                    ["sh", "-c", f"{serve} {fetch} http://127.0.0.1:8765/; echo; {fetch} http://localhost:8765/"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "200"], result.stdout
    assert request_log.read_text() == ""


def test_a_daemon_the_command_started_ends_with_the_jail(jail: Jail, tmp_path: Path) -> None:
    """A daemon (own session, parent gone: Codex's TUI starts one) is outside the command's
    process group, but not outside its netns; it must not outlive the jail."""
    pid_file, deaf_file = tmp_path / "daemon.pid", tmp_path / "deaf.pid"
    # One ends on SIGTERM; the other ignores it (SIGKILL after the grace second).
    detached = "</dev/null >/dev/null 2>&1 &"
    daemon = f"setsid sh -c 'echo $$ > {pid_file}; exec sleep 300' {detached}"
    deaf = f"setsid sh -c 'trap \"\" TERM; echo $$ > {deaf_file}; exec sleep 300' {detached}"
    wait = f"while [ ! -s {pid_file} ] || [ ! -s {deaf_file} ]; do sleep 0.05; done"
    result = strong(jail, [], ["sh", "-c", f"{daemon} {deaf} {wait}"])
    assert result.returncode == 0, result.stderr
    for pid in (int(pid_file.read_text()), int(deaf_file.read_text())):
        assert not alive(pid), "a daemon outlived the jail"
    assert leftovers(jail_id_of(result.stderr)) == []
