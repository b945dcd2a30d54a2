"""Real clients as the jailed command, through the weak jail: allowed and denied.

Each client finds the proxy and the CA only through the environment the jail sets up,
as it would for a user: curl, Python's urllib and requests, Node (CONNECT by hand, CA
from NODE_EXTRA_CA_CERTS), git over smart HTTP, and pip against a package index.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

CLIENTS = Path(__file__).parent / "clients"
RULE = "r.host === 'ok.test' || r.host === 'git.test' || r.host === 'pypi.test'"


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def assert_blocked(out: dict, host: str = "other.test") -> None:
    assert out["status"] == 403, out
    assert out["body"].startswith("Request blocked by httpjail\n"), out
    assert out["headers"]["httpjail"] == "true"
    assert out["headers"]["x-httpjail-reason"] == "rule-denied"


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_curl(jail, upstream, tmp_path, tls):
    allowed = upstream.url("ok.test", "/echo?client=curl", tls=tls)
    denied = upstream.url("other.test", "/echo?client=curl", tls=tls)
    before = len(upstream.seen)
    script = f"curl -sS {allowed}; echo; curl -sS -w '\\n%{{http_code}}' {denied}"
    result = jail.run(["--js", RULE], ["sh", "-c", script])
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.split("\n", 1)
    echo = json.loads(first)
    assert echo["path"] == "/echo?client=curl"
    assert rest[0] == "Request blocked by httpjail\nthe js rule denied GET other.test\n\n403"
    assert [s.host for s in upstream.seen[before:]] == ["ok.test"]


@pytest.mark.parametrize("lib", ["urllib", "requests"])
def test_python_clients(jail, upstream, lib):
    script = CLIENTS / "pyfetch.py"
    before = len(upstream.seen)
    urls = [
        upstream.url("ok.test", f"/echo?lib={lib}", tls=True),
        upstream.url("ok.test", f"/echo?lib={lib}", tls=False),
        upstream.url("other.test", "/echo", tls=True),
        upstream.url("other.test", "/echo", tls=False),
    ]
    cmd = " && ".join(f"{sys.executable} {script} {lib} {url}" for url in urls)
    result = jail.run(["--js", RULE], ["sh", "-c", cmd])
    assert result.returncode == 0, result.stderr
    outs = json_lines(result.stdout)
    assert len(outs) == 4, result.stdout
    for out in outs[:2]:
        assert out["status"] == 200, out
        assert json.loads(out["body"])["path"] == f"/echo?lib={lib}"
    for out in outs[2:]:
        assert_blocked(out)
    assert [s.host for s in upstream.seen[before:]] == ["ok.test", "ok.test"]


def test_python_requests_post(jail, upstream):
    result = jail.run(
        ["--js", RULE],
        [sys.executable, str(CLIENTS / "pyfetch.py"), "requests", upstream.url("ok.test"),
         "--data-bytes", "12345"],
    )
    (out,) = json_lines(result.stdout)
    assert out["status"] == 200, out
    assert json.loads(out["body"])["body_len"] == 12345


@pytest.mark.skipif(not shutil.which("node"), reason="needs node")
def test_node_connect_tunnel(jail, upstream):
    script = CLIENTS / "nodefetch.js"
    allowed = upstream.url("ok.test", "/echo?client=node")
    denied = upstream.url("other.test", "/echo")
    result = jail.run(["--js", RULE], ["sh", "-c", f"node {script} {allowed}; node {script} {denied}"])
    assert result.returncode == 0, result.stderr
    ok, blocked = json_lines(result.stdout)
    assert ok.get("status") == 200, ok
    assert json.loads(ok["body"])["path"] == "/echo?client=node"
    assert_blocked(blocked)


def test_node_without_the_ca_refuses_the_proxy_certificate(jail, upstream):
    """The check above proves trust comes from NODE_EXTRA_CA_CERTS: without it, TLS fails."""
    if not shutil.which("node"):
        pytest.skip("needs node")
    script = CLIENTS / "nodefetch.js"
    url = upstream.url("ok.test", "/echo")
    result = jail.run(["--js", RULE], ["sh", "-c", f"unset NODE_EXTRA_CA_CERTS; node {script} {url}"])
    (out,) = json_lines(result.stdout)
    assert "certificate" in out.get("error", ""), out


@pytest.mark.skipif(not shutil.which("git"), reason="needs git")
def test_git_clone_over_https(jail, upstream, tmp_path):
    dest = tmp_path / "demo"
    url = upstream.url("git.test", "/git/demo.git")
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path), "GIT_TERMINAL_PROMPT": "0"}
    result = jail.run(["--js", RULE], ["git", "clone", "-q", url, str(dest)], env=env)
    assert result.returncode == 0, result.stderr
    assert (dest / "README.md").read_text() == "hello from the test git server\n"

    denied = upstream.url("other.test", "/git/demo.git")
    result = jail.run(["--js", RULE], ["git", "clone", "-q", denied, str(tmp_path / "no")], env=env)
    assert result.returncode != 0
    assert "403" in result.stderr
    assert not (tmp_path / "no" / "README.md").exists()


def test_pip_download_from_index(jail, upstream, tmp_path):
    dest = tmp_path / "wheels"
    index = upstream.url("pypi.test", "/simple/")
    pip = (
        f"{sys.executable} -m pip download --isolated --no-deps --disable-pip-version-check "
        f"--no-cache-dir --retries 0 --timeout 15 --cert \"$PIP_CERT\" --index-url {index} -d {dest} tinypkg"
    )
    result = jail.run(["--js", RULE], ["sh", "-c", pip])
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p.name for p in dest.iterdir()] == ["tinypkg-1.0-py3-none-any.whl"]

    denied_index = upstream.url("other.test", "/simple/")
    denied_pip = pip.replace(index, denied_index).replace(str(dest), str(tmp_path / "no"))
    result = jail.run(["--js", RULE], ["sh", "-c", denied_pip])
    assert result.returncode != 0
    assert "No matching distribution found for tinypkg" in result.stderr
    assert "httpjail: 1 requests, 1 denied (other.test)" in result.stderr
    assert not (tmp_path / "no").exists() or not any((tmp_path / "no").iterdir())
