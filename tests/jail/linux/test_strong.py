"""The strong jail, end to end: real programs in a real jail, the rules applied to whatever
they do, and the escape suite (nothing reaches the tests' own sink, counted there).

Every test that sends a packet from a jail holds a sink of its own (`quiet_sink`).
"""

from __future__ import annotations

import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from httpjail_py.jail.linux.liveness import sweep_lock
from tests.conftest import Jail
from tests.jail.linux.conftest import assert_nothing_escaped, jail_id_of, leftovers, strong_capability
from tests.jail.linux.sink import SINK_IP, Sink
from tests.terminal import converse

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(strong_capability() is not None, reason=str(strong_capability())),
]

ESCAPE = Path(__file__).parent / "scripts" / "escape.py"
ALLOW_OK = ["--js", "r.host === 'ok.test'"]
NOPROXY = "env -u HTTP_PROXY -u HTTPS_PROXY -u http_proxy -u https_proxy -u ALL_PROXY -u all_proxy"


def strong(jail: Jail, args: list[str], child: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return jail.run(["-v", *args], child, weak=False, **kw)  # type: ignore[arg-type]


def log_lines(path: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()]


# --- programs that ignore the proxy are caught, and the rules apply ------------------------

CLIENTS = {
    "curl --noproxy https": "curl -sS -m 10 --noproxy '*' -o /dev/null -w '%{{http_code}}\\n' {url}",
    "python, no proxy variables": NOPROXY
    + " "
    + sys.executable
    + " -c 'import sys,urllib.request as u,urllib.error as e\ntry: print(u.urlopen(sys.argv[1]).status)\n"
    "except e.HTTPError as x: print(x.code)' {url}",
    "node fetch": "node -e 'fetch(process.argv[1]).then(r=>console.log(r.status))' {url}",
}


@pytest.mark.parametrize("client", CLIENTS)
def test_clients_that_ignore_http_proxy_are_caught(
    jail: Jail, quiet_sink: Sink, tmp_path: Path, client: str
) -> None:
    if client == "node fetch" and not (
        Path("/usr/bin/node").exists() or Path("/usr/local/bin/node").exists()
    ):
        pytest.skip("needs node")
    up = jail.upstream
    ok, denied = up.url("ok.test", "/echo"), up.url("api.test", "/echo")
    script = CLIENTS[client].format(url=ok) + "; " + CLIENTS[client].format(url=denied)
    log = tmp_path / "requests.log"
    result = strong(jail, [*ALLOW_OK, "--request-log", str(log)], ["sh", "-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "403"], result.stderr
    assert log_lines(log) == [f"+ GET {ok}", f"- GET {denied}"]
    assert up.seen_paths("api.test") == [] or all(p != "/echo" for p in up.seen_paths("api.test"))


def test_plain_http_on_any_port_and_the_proxy_variables_work(
    jail: Jail, quiet_sink: Sink, tmp_path: Path
) -> None:
    up = jail.upstream
    plain = up.url("ok.test", "/echo", tls=False)
    script = (
        f"curl -sS -m 10 --noproxy '*' -o /dev/null -w '%{{http_code}}\\n' {plain}; "
        # The forward proxy on the veth's host end, as HTTP_PROXY names it.
        f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}\\n' {up.url('ok.test')}; "
        'echo "$HTTPS_PROXY"'
    )
    result = strong(jail, ALLOW_OK, ["sh", "-c", script])
    assert result.returncode == 0, result.stderr
    code1, code2, proxy = result.stdout.split()
    assert (code1, code2) == ("200", "200")
    assert proxy.startswith("http://10.") and not proxy.startswith("http://127.")


def test_sni_and_host_must_agree_and_tls_without_sni_is_closed(
    jail: Jail, quiet_sink: Sink, tmp_path: Path
) -> None:
    up = jail.upstream
    port = up.https_port
    log = tmp_path / "requests.log"
    script = (
        f"curl -sS -m 10 --noproxy '*' -o /dev/null -w '%{{http_code}}\\n' -H 'Host: api.test:{port}' "
        f"{up.url('ok.test')}; "
        # An IP literal sends no SNI.
        f"curl -sS -m 10 --noproxy '*' -k -o /dev/null -w '%{{http_code}}\\n' https://198.18.3.3:{port}/; "
        "true"
    )
    result = strong(jail, [*ALLOW_OK, "--request-log", str(log)], ["sh", "-c", script])
    assert result.stdout.split() == ["403", "000"], result.stderr
    assert "does not match the request target" in result.stderr
    assert log_lines(log)[-1] == f"- TLS 198.18.3.3:{port}"


def test_a_connect_relay_inside_the_jail_is_still_caught(
    jail: Jail, quiet_sink: Sink, tmp_path: Path
) -> None:
    """A helper in the jail that tunnels CONNECT requests itself: its own connections are NATed."""
    relay = (
        "import socket,threading\n"
        "srv=socket.create_server(('127.0.0.1',0)); print(srv.getsockname()[1],flush=True)\n"
        "def pipe(a,b):\n"
        "  while (d:=a.recv(65536)): b.sendall(d)\n"
        "  b.close()\n"
        "while True:\n"
        "  c,_=srv.accept(); head=c.recv(4096).split(b' ')[1].decode(); h,p=head.rsplit(':',1)\n"
        "  u=socket.create_connection((h,int(p))); c.sendall(b'HTTP/1.1 200 OK\\r\\n\\r\\n')\n"
        "  threading.Thread(target=pipe,args=(c,u),daemon=True).start()\n"
        "  threading.Thread(target=pipe,args=(u,c),daemon=True).start()\n"
    )
    up = jail.upstream
    script = (
        f'{sys.executable} -c "$RELAY" > {tmp_path}/port & sleep 1; P=$(cat {tmp_path}/port); '
        f"for u in {up.url('ok.test')} {up.url('api.test')}; do "
        "curl -sS -m 10 -x http://127.0.0.1:$P -o /dev/null -w '%{http_code}\\n' $u; done; kill %1"
    )
    result = strong(jail, ALLOW_OK, ["sh", "-c", script], env={"RELAY": relay})
    assert result.stdout.split() == ["200", "403"], result.stderr


# --- the escape suite -----------------------------------------------------------------------


def test_nothing_a_jailed_program_tries_reaches_the_sink(
    jail: Jail, quiet_sink: Sink, tmp_path: Path
) -> None:
    log = tmp_path / "requests.log"
    result = strong(jail, [*ALLOW_OK, "--request-log", str(log)], [sys.executable, str(ESCAPE), SINK_IP])
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert_nothing_escaped(outcome)
    lines = log_lines(log)
    for port in (22, 80, 443, 8080):
        assert f"- TCP {SINK_IP}:{port}" in lines
    assert f"- GET http://{SINK_IP}:8080/escape" in lines
    assert "- TCP 198.18.7.7:22" in lines


def test_a_jailed_root_that_flushes_the_jail_rules_still_reaches_nothing(
    jail: Jail, quiet_sink: Sink, tmp_path: Path
) -> None:
    """The attacker: root with every capability inside the jail netns (`ip netns exec`).

    Also the host's input filter on its own: UDP to a host service listening on every
    address, sent at the jail's gateway (the host end of its veth), must not arrive.
    """
    import socket

    host_service = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    host_service.bind(("0.0.0.0", 0))
    host_service.settimeout(0.5)
    go = tmp_path / "go"
    child = ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.1; done"]
    proc = jail.popen(["-v", *ALLOW_OK], child, weak=False)
    try:
        netns = _wait_for_jail(proc)
        attack = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "sh",
                "-c",
                f"nft flush ruleset && sysctl -qw net.ipv6.conf.all.disable_ipv6=0 && "
                f"{sys.executable} {ESCAPE} {SINK_IP} --attacker "
                f"--gateway-port {host_service.getsockname()[1]}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert attack.returncode == 0, attack.stderr
        outcome = json.loads(attack.stdout)
        # With the jail's own rules gone, the packets are sent, and the host drops them.
        for name in ("udp 9999", "icmp", "raw ip", "packet socket", "udp to the gateway"):
            assert outcome[name] in ("sent", "sent, no answer"), (name, outcome[name])
        with pytest.raises(TimeoutError):
            host_service.recvfrom(100)
        assert outcome["dns to the sink"].startswith("answer of")  # NATed to the sinkhole
        assert outcome["tcp 22"] == "connected, read b''"  # NATed to the proxy
    finally:
        go.touch()
        proc.communicate(timeout=60)
        host_service.close()


def _wait_for_jail(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if "ready" in line:
                return jail_id_of(seen)
    raise AssertionError(f"the jail did not start:\n{seen}")


def test_host_services_are_reachable_only_through_the_rules(
    jail: Jail, quiet_sink: Sink, tmp_path: Path
) -> None:
    import socket

    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 0))
    tcp.settimeout(0.1)
    udp.settimeout(0.1)
    try:
        port, uport = tcp.getsockname()[1], udp.getsockname()[1]
        script = (
            "import socket,struct,sys\n"
            "gw=[socket.inet_ntoa(struct.pack('<L',int(l.split()[2],16))) for l in open('/proc/net/route')"
            " if l.split()[1]=='00000000'][0]\n"
            "out=[]\n"
            "for host in ('127.0.0.1', gw):\n"
            "  try:\n"
            "    socket.create_connection((host, int(sys.argv[1])), timeout=3).close()\n"
            "    out.append('tcp '+host)\n"
            "  except OSError as e: out.append(type(e).__name__)\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "try: s.sendto(b'x',(gw,int(sys.argv[2]))); out.append('udp sent')\n"
            "except OSError as e: out.append(type(e).__name__)\n"
            "print(out)\n"
        )
        result = strong(jail, ALLOW_OK, [sys.executable, "-c", script, str(port), str(uport)])
        assert result.returncode == 0, result.stderr
        # 127.0.0.1 is the jail's own loopback; the gateway's TCP is the proxy's.
        assert "ConnectionRefusedError" in result.stdout
        for sock in (tcp, udp):
            with pytest.raises(TimeoutError):
                sock.accept() if sock is tcp else sock.recvfrom(10)
    finally:
        tcp.close()
        udp.close()


# --- who the child is ---------------------------------------------------------------------


def _caps(status: str, field: str) -> int:
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field)), 16)


NET_CAPS = (1 << 12) | (1 << 13)  # CAP_NET_ADMIN, CAP_NET_RAW


def test_root_stays_root_without_network_capabilities(jail: Jail) -> None:
    result = strong(jail, [], ["sh", "-c", "id -u; cat /proc/self/status"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "0"
    for field in ("CapEff:", "CapPrm:", "CapBnd:", "CapInh:", "CapAmb:"):
        assert _caps(result.stdout, field) & NET_CAPS == 0, field


def test_under_sudo_the_child_is_the_invoking_user(jail: Jail) -> None:
    nobody = pwd.getpwuid(65534)
    # Under sudo the CA lives in the invoking user's home (ca.store_dir), made if missing:
    # for nobody that is /nonexistent, removed again unless it was there before.
    home = Path(nobody.pw_dir)
    existed = home.exists()
    try:
        result = strong(
            jail,
            [],
            ["sh", "-c", "id -u; id -g; echo $HOME; grep CapEff /proc/self/status"],
            env={"SUDO_UID": str(nobody.pw_uid), "SUDO_GID": str(nobody.pw_gid)},
        )
    finally:
        if not existed:
            shutil.rmtree(home, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    uid, gid, child_home, _, cap_eff = result.stdout.split()
    assert (uid, gid) == ("65534", "65534")
    assert child_home == nobody.pw_dir
    assert int(cap_eff, 16) == 0


# --- exit statuses, signals, terminals -------------------------------------------------------


@pytest.mark.parametrize(
    "command, status",
    [(["sh", "-c", "exit 7"], 7), (["sh", "-c", "kill -TERM $$"], 143), (["no-such-command-x"], 127)],
)
def test_exit_status_passes_through(jail: Jail, command: list[str], status: int) -> None:
    result = strong(jail, [], command)
    assert result.returncode == status, result.stderr
    assert leftovers(jail_id_of(result.stderr)) == []


def test_timeout_stops_the_command_and_cleans_up(jail: Jail) -> None:
    result = strong(jail, ["--timeout", "1"], ["sleep", "30"])
    assert result.returncode == 124
    assert leftovers(jail_id_of(result.stderr)) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_httpjail_cleans_up(jail: Jail, sig: int) -> None:
    proc = jail.popen(["-v"], ["sleep", "30"], weak=False)
    netns = _wait_for_jail(proc)
    assert leftovers(netns)  # it exists while running
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert leftovers(netns) == []


def test_after_sigkill_cleanup_removes_everything(jail: Jail) -> None:
    proc = jail.popen(["-v"], ["sleep", "30"], weak=False)
    netns = _wait_for_jail(proc)
    with sweep_lock():  # no jail starting meanwhile (another test's) may sweep it yet
        proc.kill()
        proc.wait(timeout=30)
        assert {"netns", "veth", "nft table", "claim file"} <= set(leftovers(netns))
    result = jail.run(["--cleanup"])
    assert result.returncode == 0, result.stderr
    # A jail starting meanwhile (another test) sweeps too, and may have got there first.
    assert f"removed netns {netns}" in result.stderr or "0 leftover resources removed" in result.stderr
    assert leftovers(netns) == []
    # The command died with httpjail (PR_SET_PDEATHSIG), so its pipes are closed.
    proc.communicate(timeout=30)


def test_ten_jails_at_once(jail: Jail, quiet_sink: Sink, tmp_path: Path) -> None:
    url = jail.upstream.url("ok.test")
    # Each waits until all ten are up, so that all ten exist at the same moment.
    script = (
        f"mktemp -p {tmp_path} > /dev/null; n=0; "
        f'while [ "$(ls {tmp_path} | wc -l)" -lt 10 ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; '
        f"curl -sS -m 20 --noproxy '*' -o /dev/null -w '%{{http_code}}' {url}"
    )
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: strong(jail, ALLOW_OK, ["sh", "-c", script]), range(10)))
    assert [r.stdout for r in results] == ["200"] * 10, [r.stderr for r in results if r.stdout != "200"]
    subnets = {r.stderr.split("jail httpjail_")[1].split(": ")[1].split()[0] for r in results}
    assert len(subnets) == 10
    assert all(leftovers(jail_id_of(r.stderr)) == [] for r in results)


def test_an_interactive_program_gets_a_terminal(jail: Jail) -> None:
    status, output = converse(
        jail.command([], ["sh", "-c", "test -t 0 && echo tty-ok; read x; echo got-$x"]),
        {**os.environ, "XDG_CONFIG_HOME": str(jail.config_home)}, b"tty-ok", b"hello\n", b"got-hello",
    )
    assert status == 0, output
    assert b"tty-ok" in output and b"got-hello" in output, output
