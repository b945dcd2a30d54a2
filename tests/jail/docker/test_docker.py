"""`--docker-run`, end to end against the real engine: a container whose only way out is
the proxy. The image is made from this host's binaries (image.py); the escape suite of the
strong jail runs again inside a container, aimed at the tests' own sink.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from httpjail_py.jail.linux.liveness import sweep_lock
from tests.conftest import Jail
from tests.jail.docker.image import build_test_image
from tests.jail.linux.conftest import assert_nothing_escaped, jail_id_of, leftovers, strong_capability
from tests.jail.linux.sink import SINK_IP, Sink
from tests.terminal import converse

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.docker,
    pytest.mark.skipif(strong_capability() is not None, reason=str(strong_capability())),
]

ESCAPE = Path(__file__).parents[1] / "linux" / "scripts" / "escape.py"
ALLOW_OK = ["--js", "r.host === 'ok.test'"]


@pytest.fixture(scope="session")
def image(docker_client: Any) -> str:
    return build_test_image(docker_client)


def in_docker(
    jail: Jail, args: list[str], docker_args: list[str], **kw: Any
) -> subprocess.CompletedProcess[str]:
    return jail.run(["-v", *args, "--docker-run"], docker_args, weak=False, **kw)


def docker_leftovers(client: Any, netns: str) -> list[str]:
    """What still exists of the jail `netns` (httpjail_<id>), containers included."""
    jail_id = netns.removeprefix("httpjail_")
    containers = client.containers.list(all=True, filters={"label": f"httpjail-py.jail={jail_id}"})
    return leftovers(netns) + [f"container {c.name}" for c in containers]


def networks(client: Any) -> set[str]:
    return {network.id for network in client.networks.list()}


def test_real_clients_are_intercepted_and_filtered(
    jail: Jail, docker_client: Any, image: str, quiet_sink: Sink, tmp_path: Path
) -> None:
    up = jail.upstream
    ok, denied = up.url("ok.test", "/echo"), up.url("api.test", "/echo")
    code = "-sS -m 10 -o /dev/null -w '%{http_code}\\n'"
    python = ("python3 -c 'import sys,urllib.request as u,urllib.error as e\n"
              "try: print(u.urlopen(sys.argv[1]).status)\nexcept e.HTTPError as x: print(x.code)' ")
    script = (f"curl {code} {ok}; curl {code} --noproxy '*' {denied}; "
              f"{python}{ok}; env -u HTTPS_PROXY -u https_proxy {python}{denied}")
    before = networks(docker_client)
    log, audit = tmp_path / "requests.log", tmp_path / "audit.jsonl"
    result = in_docker(jail, [*ALLOW_OK, "--request-log", str(log), "--audit-log", str(audit)],
                       ["--rm", image, "sh", "-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "403", "200", "403"], result.stderr
    lines = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    assert lines == [f"+ GET {ok}", f"- GET {denied}", f"+ GET {ok}", f"- GET {denied}"]
    netns = jail_id_of(result.stderr)
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {r["jail"] for r in records} == {netns}
    assert [r["decision"] for r in records] == ["allow", "deny", "allow", "deny"]
    assert docker_leftovers(docker_client, netns) == []
    assert networks(docker_client) == before


def test_nothing_a_container_tries_reaches_the_sink(
    jail: Jail, docker_client: Any, image: str, quiet_sink: Sink, tmp_path: Path
) -> None:
    log = tmp_path / "requests.log"
    result = in_docker(jail, [*ALLOW_OK, "--request-log", str(log)],
                       ["--rm", "-v", f"{ESCAPE}:/escape.py:ro", image, "python3", "/escape.py", SINK_IP])
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert_nothing_escaped(outcome)
    lines = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    for port in (22, 80, 443, 8080):
        assert f"- TCP {SINK_IP}:{port}" in lines
    assert docker_leftovers(docker_client, jail_id_of(result.stderr)) == []


def test_the_containers_resolver_is_the_sinkhole(jail: Jail, image: str) -> None:
    script = ("cat /etc/resolv.conf; "
              "python3 -c 'import socket; print(socket.gethostbyname(\"anything.example\"))'")
    result = in_docker(jail, ALLOW_OK, ["--rm", image, "sh", "-c", script])
    assert result.returncode == 0, result.stderr
    nameservers = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("nameserver")]
    gateway = result.stderr.split("(host end ")[1].split()[0]
    assert nameservers == [gateway]
    assert result.stdout.splitlines()[-1].startswith("198.18.")


@pytest.mark.parametrize(("options", "message"), [
    (["--cap-add", "NET_ADMIN"], "--cap-add NET_ADMIN is not allowed in a jail"),
    (["--cap-add=ALL"], "--cap-add ALL is not allowed in a jail"),
    (["--network", "host"], "--network is not allowed in a jail"),
    (["--net=host"], "--net is not allowed in a jail"),
    (["--dns", "8.8.8.8"], "--dns is not allowed in a jail"),
    (["--privileged"], "--privileged is not allowed in a jail"),
    (["--pid=host"], "--pid host is not allowed in a jail"),
    (["-v", "/run/docker.sock:/run/docker.sock"], "a container engine's socket"),
    (["--bogus-option"], "unknown docker run option --bogus-option"),
    (["--", "--privileged"], "is not an image"),
    (["-v", "/run:/hr"], "holds /run/docker.sock"),
])
def test_options_that_would_undo_the_jail_are_refused(jail: Jail, options: list[str], message: str) -> None:
    result = in_docker(jail, ALLOW_OK, [*options, "some-image", "true"])
    assert result.returncode == 2
    assert message in result.stderr


def test_docker_run_options_work_and_the_exit_status_passes_through(
    jail: Jail, docker_client: Any, image: str, tmp_path: Path
) -> None:
    (tmp_path / "data").write_text("mounted\n")
    tmp_path.chmod(0o755)  # the container's user is nobody
    options = ["-e", "FOO=bar", "--env=BAZ=qux", "-v", f"{tmp_path}:/data:ro", "-w", "/tmp", "--user",
               "65534:65534", "--entrypoint", "sh", "--name", f"hj-test-{secrets.token_hex(3)}"]
    script = ('echo "$FOO $BAZ"; pwd; id -u; cat /data/data; test -r "$SSL_CERT_FILE" && echo ca-ok; '
              'echo "$NO_PROXY"; exit 7')
    result = in_docker(jail, ALLOW_OK, [*options, image, "-c", script])
    assert result.returncode == 7, result.stderr
    # NO_PROXY: the container's loopback is its own.
    assert result.stdout.split("\n") == [
        "bar qux", "/tmp", "65534", "mounted", "ca-ok", "localhost,127.0.0.1,::1", ""]
    assert docker_leftovers(docker_client, jail_id_of(result.stderr)) == []
    assert not docker_client.containers.list(all=True, filters={"name": options[-1]})


def test_the_container_holds_the_placeholder_and_the_api_gets_the_key(jail: Jail, image: str) -> None:
    key = "sk-test-" + secrets.token_hex(24)
    tag = secrets.token_hex(4)
    api = jail.upstream.url("api.test", f"/echo/{tag}")
    auth = '-H "Authorization: Bearer $TEST_API_KEY"'
    script = f'echo "$TEST_API_KEY"; curl -sS -m 10 --noproxy "*" {auth} {api}'
    result = in_docker(jail, ["--js", "true", "--secret", "TEST_API_KEY@api.test"],
                       ["--rm", image, "sh", "-c", script], env={"TEST_API_KEY": key})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("httpjail-secret-")
    [got] = [s for s in jail.upstream.seen if s.path == f"/echo/{tag}"]
    assert got.headers["authorization"] == f"Bearer {key}"
    assert key not in result.stdout + result.stderr


def _wait_for_container(proc: subprocess.Popen[str], client: Any) -> str:
    """The jail's netns name, once its container runs."""
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "ready" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1)
        if ready:
            seen += proc.stderr.readline()
    netns = jail_id_of(seen)
    label = f"httpjail-py.jail={netns.removeprefix('httpjail_')}"
    while time.monotonic() < deadline:
        if len(client.containers.list(filters={"label": label, "status": "running"})) == 2:
            return netns
        time.sleep(0.1)
    raise AssertionError(f"the container did not start:\n{seen}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_httpjail_stops_and_removes_everything(
    jail: Jail, docker_client: Any, image: str, sig: int
) -> None:
    # The container's PID 1 ignores a signal it has no handler for: this one has.
    child = [image, "sh", "-c", f'trap "exit {128 + sig}" INT TERM; sleep 30 & wait']
    proc = jail.popen(["-v", *ALLOW_OK, "--docker-run"], child, weak=False)
    netns = _wait_for_container(proc, docker_client)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert docker_leftovers(docker_client, netns) == []


def test_timeout_stops_the_container_and_cleans_up(jail: Jail, docker_client: Any, image: str) -> None:
    result = in_docker(jail, [*ALLOW_OK, "--timeout", "2"], [image, "sleep", "30"])
    assert result.returncode == 124, result.stderr
    assert docker_leftovers(docker_client, jail_id_of(result.stderr)) == []


def test_after_sigkill_cleanup_removes_the_containers(jail: Jail, docker_client: Any, image: str) -> None:
    proc = jail.popen(["-v", *ALLOW_OK, "--docker-run"], [image, "sleep", "30"], weak=False)
    netns = _wait_for_container(proc, docker_client)
    with sweep_lock():  # no jail starting meanwhile (another test's) may sweep it yet
        proc.kill()
        proc.wait(timeout=30)
        assert any(item.startswith("container") for item in docker_leftovers(docker_client, netns))
    result = jail.run(["--cleanup"])
    assert result.returncode == 0, result.stderr
    assert docker_leftovers(docker_client, netns) == []
    assert not Path("/run/httpjail", f"{netns.removeprefix('httpjail_')}.cid").exists()
    proc.communicate(timeout=30)


def test_an_interactive_container_gets_a_terminal(jail: Jail, image: str) -> None:
    child = ["-it", "--rm", image, "sh", "-c", "test -t 0 && echo tty-ok; read x; echo got-$x"]
    status, output = converse(
        jail.command([*ALLOW_OK, "--docker-run"], child),
        {**os.environ, "XDG_CONFIG_HOME": str(jail.config_home)}, b"tty-ok", b"hello\r", b"got-hello",
    )
    assert status == 0, output
    assert b"tty-ok" in output and b"got-hello" in output, output


def test_teardown_removes_only_the_container_it_started(jail: Jail, docker_client: Any, image: str) -> None:
    """A --name that is taken makes docker fail; the container that had it must survive."""
    name = f"hj-victim-{secrets.token_hex(3)}"
    victim = docker_client.containers.run(image, ["sleep", "60"], name=name, network_mode="none", detach=True)
    try:
        result = in_docker(jail, ALLOW_OK, ["--name", name, image, "true"])
        assert result.returncode == 125, result.stderr  # docker's own status for its errors
        victim.reload()
        assert victim.status == "running"
        assert docker_leftovers(docker_client, jail_id_of(result.stderr)) == []
    finally:
        victim.remove(force=True)
