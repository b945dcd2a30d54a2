"""The command starts before mitmproxy is loaded (httpjail_py/listening.py): what it sends
meanwhile waits for the proxy and gets the rules' answer, and a proxy that cannot load
stops the command.

mitmproxy is made to load at a moment of the test's choosing: a package named `mitmproxy`
first on httpjail's PYTHONPATH waits until the command has made a marker file, then
either loads the real mitmproxy in its place or fails as a broken install would. (The
strong jail's `enter.py` runs with `-I`: the command does not see it.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import mitmproxy
import pytest

from tests.conftest import Jail
from tests.jail.linux.conftest import jail_id_of, leftovers, strong_capability
from tests.pids import alive

LATE_MITMPROXY = '''
import os, time
from pathlib import Path

marker = Path(os.environ["TEST_MITMPROXY_MARKER"])
deadline = time.monotonic() + 30
while not marker.exists():
    if time.monotonic() > deadline:
        raise ImportError("mitmproxy was loaded before the command made its marker")
    time.sleep(0.01)
if os.environ["TEST_MITMPROXY"] == "broken":
    raise ImportError("this mitmproxy is broken (the test's)")
# From here on, this package is the real one: its modules and its __init__.
__path__[:] = [os.environ["TEST_MITMPROXY_REAL"]]
exec(compile(Path(__path__[0], "__init__.py").read_text(), __file__, "exec"))
'''

JAILS = [
    pytest.param(True, id="weak"),
    pytest.param(False, id="strong", marks=[
        pytest.mark.root, pytest.mark.netns,
        pytest.mark.skipif(strong_capability() is not None, reason=str(strong_capability())),
    ]),
]


def late_mitmproxy_env(tmp_path: Path, mode: str) -> tuple[dict[str, str], Path]:
    package = tmp_path / "shadow" / "mitmproxy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(LATE_MITMPROXY)
    marker = tmp_path / "command-started"
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(package.parent), os.environ.get("PYTHONPATH")])),
        "TEST_MITMPROXY": mode,
        "TEST_MITMPROXY_MARKER": str(marker),
        "TEST_MITMPROXY_REAL": str(Path(mitmproxy.__file__).parent),
    }
    return env, marker


@pytest.mark.parametrize("weak", JAILS)
def test_what_the_command_sends_before_the_proxy_is_loaded_gets_the_rules_answer(
    jail: Jail, tmp_path: Path, weak: bool
) -> None:
    env, marker = late_mitmproxy_env(tmp_path, "late")
    up = jail.upstream
    ok, denied = up.url("ok.test", "/echo"), up.url("api.test", "/echo")
    # Both requests are on their way (in the queue of the proxy's socket) before the
    # marker lets mitmproxy load; in the strong jail, through its NAT.
    curl = "curl -sS -m 30 -o /dev/null -w '%{http_code}\\n'" + ("" if weak else " --noproxy '*'")
    script = f"{curl} {ok} > {tmp_path}/ok & {curl} {denied} > {tmp_path}/denied & "
    script += f"sleep 1; touch {marker}; wait"
    log = tmp_path / "requests.log"
    args = ["-v", "--js", "r.host === 'ok.test'", "--request-log", str(log)]
    result = jail.run(args, ["sh", "-c", script], weak=weak, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ok").read_text() == "200\n"
    assert (tmp_path / "denied").read_text() == "403\n"
    assert sorted(line.split(" ", 1)[1] for line in log.read_text().splitlines()) == [
        f"+ GET {ok}", f"- GET {denied}"]
    assert "/echo" not in up.seen_paths("api.test")


@pytest.mark.parametrize("weak", JAILS)
def test_a_proxy_that_cannot_load_stops_the_command(jail: Jail, tmp_path: Path, weak: bool) -> None:
    env, marker = late_mitmproxy_env(tmp_path, "broken")
    out = tmp_path / "out"
    script = f"echo started > {out}; touch {marker}; sleep 60; echo finished >> {out}"
    result = jail.run(["-v", "--js", "true"], ["sh", "-c", script], weak=weak, env=env, timeout=50)
    assert result.returncode == 1, result.stderr
    assert "cannot load the proxy (mitmproxy): ImportError: this mitmproxy is broken" in result.stderr
    assert "the command was stopped" in result.stderr
    assert "Traceback" not in result.stderr
    assert out.read_text() == "started\n"
    if not weak:
        assert leftovers(jail_id_of(result.stderr)) == []



def test_what_the_command_left_is_stopped_when_the_proxy_fails_as_it_exits(
    jail: Jail, tmp_path: Path
) -> None:
    # The command exits at once, leaving a process that ignores SIGTERM in its group; the
    # proxy fails while httpjail gives that process its grace. It must still get its SIGKILL.
    env, marker = late_mitmproxy_env(tmp_path, "broken")
    pidfile = tmp_path / "leftover.pid"
    script = f"(trap '' TERM; exec sleep 30) >/dev/null 2>&1 & echo $! > {pidfile}; touch {marker}; exit 0"
    result = jail.run(["--js", "true"], ["sh", "-c", script], env=env, timeout=50)
    assert "cannot load the proxy" in result.stderr
    assert not alive(int(pidfile.read_text()))


@pytest.mark.parametrize("weak", JAILS)
def test_a_signal_while_the_proxy_loads_goes_to_the_command(jail: Jail, tmp_path: Path, weak: bool) -> None:
    # The marker is never made: mitmproxy is still loading when the signal comes.
    env, _ = late_mitmproxy_env(tmp_path, "late")
    proc = jail.popen(["-v", "--js", "true"], ["sh", "-c", "echo ready; sleep 60"], weak=weak, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    if not weak:
        assert leftovers(jail_id_of(stderr)) == []
