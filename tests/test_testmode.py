"""`httpjail --test [METHOD] URL` (testmode.py): evaluate the rule once, print, exit."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from httpjail_py.engines.base import RequestInfo
from httpjail_py.engines.js import JsEngine
from httpjail_py.testmode import parse_test_args, request_from_url, run_test

ROOT = Path(__file__).resolve().parent.parent


def httpjail(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI, as a user runs it, with its config home in tmp_path."""
    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    base["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return subprocess.run(
        [sys.executable, "-m", "httpjail_py", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=base | (env or {}),
        cwd=ROOT,
    )


# --- through the CLI --------------------------------------------------------------------


def test_allow_prints_one_line_and_exits_0(tmp_path: Path) -> None:
    result = httpjail(tmp_path, "--test", "GET", "https://github.com/foo", "--js", "r.host === 'github.com'")
    assert (result.returncode, result.stdout, result.stderr) == (0, "ALLOW GET https://github.com/foo\n", "")


def test_deny_prints_the_message_on_a_second_line_and_exits_1(tmp_path: Path) -> None:
    rule = "r.host === 'github.com' || {deny_message: 'only github, not ' + r.host}"
    result = httpjail(tmp_path, "--js", rule, "--test", "https://gitlab.com/foo")
    assert result.returncode == 1, result.stderr
    assert result.stdout == "DENY GET https://gitlab.com/foo\nonly github, not gitlab.com\n"


def test_one_argument_form(tmp_path: Path) -> None:
    result = httpjail(tmp_path, "--js", "r.method === 'POST' && r.host === 'x'", "--test", "POST https://x/")
    assert (result.returncode, result.stdout) == (0, "ALLOW POST https://x/\n"), result.stderr


@pytest.mark.parametrize("url", ["github.com/foo", "ftp://github.com/", "https:///nohost"])
def test_url_without_http_scheme_or_host_is_an_error(tmp_path: Path, url: str) -> None:
    result = httpjail(tmp_path, "--js", "true", "--test", url)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"httpjail: error: --test: {url!r} is not an http:// or https:// URL with a host\n"
    )


def test_test_mode_sends_nothing_and_makes_no_ca(tmp_path: Path) -> None:
    # why: --test must only evaluate; a listener on the very address the URL resolves to
    # (and named as the proxy, too) would see any connection attempt.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        url = f"http://ok.test:{port}/x"
        result = httpjail(
            tmp_path,
            "--resolve", f"ok.test:{port}:127.0.0.1",
            "--test", f"http://127.0.0.1:{port}/",
            "--js", "r.host === '127.0.0.1'",
            env={"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url},
        )
        assert (result.returncode, result.stdout) == (0, f"ALLOW GET http://127.0.0.1:{port}/\n")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert not (tmp_path / "config").exists()


# --- the parts, in-process --------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["https://x/"], ("GET", "https://x/")),
        (["POST", "https://x/"], ("POST", "https://x/")),
        (["delete", "https://x/"], ("DELETE", "https://x/")),
        (["POST https://x/"], ("POST", "https://x/")),
        (["  https://x/  "], ("GET", "https://x/")),
    ],
)
def test_parse_test_args(values: list[str], expected: tuple[str, str]) -> None:
    assert parse_test_args(values) == expected


@pytest.mark.parametrize(
    ("url", "fields"),
    [
        ("https://github.com/foo", {"scheme": "https", "host": "github.com", "port": 443, "path": "/foo"}),
        ("http://GitHub.COM.", {"scheme": "http", "host": "github.com", "port": 80, "path": "/"}),
        (
            "HTTPS://a.test:8443/p?q=1&r=2",
            {"scheme": "https", "port": 8443, "path": "/p", "query": "q=1&r=2"},
        ),
        ("http://[::1]:8080/", {"host": "::1", "port": 8080}),
        ("https://user:pw@a.test/", {"host": "a.test", "headers": {"host": "a.test"}}),
        ("https://a.test:8443/", {"headers": {"host": "a.test:8443"}}),
    ],
)
def test_request_from_url(url: str, fields: dict[str, object]) -> None:
    req = request_from_url("GET", url)
    assert isinstance(req, RequestInfo)
    for name, value in fields.items():
        assert getattr(req, name) == value, name


@pytest.mark.parametrize("url", ["https://x:99999/", "https://x:port/", "mailto:a@b", "//x/"])
def test_request_from_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        request_from_url("GET", url)


def test_run_test_prints_a_rule_error(capsys: pytest.CaptureFixture[str]) -> None:
    engine = JsEngine("throw new Error('bad rule')")
    status = asyncio.run(run_test(engine, "GET", "https://a.test/"))
    assert status == 1
    assert capsys.readouterr().out == "DENY GET https://a.test/\nrule error: Error: bad rule\n"


def test_run_test_hands_the_rule_the_parsed_url(capsys: pytest.CaptureFixture[str]) -> None:
    rule = (
        "r.method === 'PUT' && r.scheme === 'https' && r.host === 'a.test' && r.port === 8443 "
        "&& r.path === '/p' && r.query === 'q=1' && r.url === 'https://a.test:8443/p?q=1' "
        "&& r.headers.host === 'A.test:8443'"
    )
    status = asyncio.run(run_test(JsEngine(rule), "PUT", "https://A.test:8443/p?q=1"))
    assert (status, capsys.readouterr().out) == (0, "ALLOW PUT https://A.test:8443/p?q=1\n")
