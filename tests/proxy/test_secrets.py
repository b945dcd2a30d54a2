"""--secret, --secret-file and --header through the real CLI and proxy: the jailed command
holds a placeholder, the upstream gets the real value, and the value reaches nothing the
jail or a log can see.

The "API" is the tests' own TLS server on loopback (`/echo` answers with the headers it
got, so it also echoes the real key back: the jail must see the placeholder there).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import sys
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.conftest import Jail
from tests.proxy.test_protocols import CLIENTS
from tests.upstream import Upstream

PLACEHOLDER = re.compile(r"httpjail-secret-[a-z0-9]+")


def real_key() -> str:
    return "sk-test-" + secrets.token_hex(24)


# The jailed side: prints what it holds, then calls the API with it in several places and
# sends it to another allowed host. Every response is printed, headers included.
CLIENT = r"""
import base64, os, ssl, sys, urllib.request, urllib.error
api, other, tag = sys.argv[1:4]
key = os.environ["TEST_API_KEY"]
print("env", key)
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
def call(url, headers=None, data=None):
    req = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        resp = urllib.request.urlopen(req, context=ctx)
    except urllib.error.HTTPError as e:
        resp = e
    print(url.split("?")[0], resp.status, resp.headers.get("X-Httpjail-Reason", "-"))
    print(resp.read().decode())
call(f"{api}/echo/{tag}/bearer?key={key}", {"Authorization": f"Bearer {key}"})
basic = base64.b64encode(f"user:{key}".encode()).decode()
call(f"{api}/echo/{tag}/basic", {"Authorization": f"Basic {basic}"})
call(f"{api}/echo/{tag}/body", data=f"key={key}".encode())
call(f"{other}/echo/{tag}/leak", {"x-api-key": key})
"""


def run_client(jail: Jail, upstream: Upstream, tmp_path: Path, key: str, *extra: str) -> tuple[
        CompletedProcess[str], str]:
    tag = secrets.token_hex(4)
    args = ["--js", "true", "--secret", "TEST_API_KEY@api.test", "-vvv",
            "--request-log", str(tmp_path / "requests.log"), "--audit-log", str(tmp_path / "audit.jsonl"),
            *extra]
    child = [sys.executable, "-c", CLIENT, upstream.url("api.test", ""), upstream.url("ok.test", ""), tag]
    return jail.run(args, child, env={"TEST_API_KEY": key}), tag


def seen(upstream: Upstream, tag: str, what: str) -> dict[str, str]:
    [entry] = [s for s in upstream.seen if s.path.startswith(f"/echo/{tag}/{what}".rstrip("/"))]
    return {"path": entry.path, **entry.headers}


def test_the_api_gets_the_key_and_the_jail_only_the_placeholder(
    jail: Jail, upstream: Upstream, tmp_path: Path
) -> None:
    key = real_key()
    result, tag = run_client(jail, upstream, tmp_path, key)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    placeholder = out.split("env ", 1)[1].split()[0]
    assert PLACEHOLDER.fullmatch(placeholder) and len(placeholder) == len(key)

    # What arrived upstream: the real key, in the header, the query and Basic credentials.
    bearer = seen(upstream, tag, "bearer")
    assert bearer["authorization"] == f"Bearer {key}"
    assert bearer["path"].endswith(f"?key={key}")
    assert base64.b64decode(seen(upstream, tag, "basic")["authorization"][6:]).decode() == f"user:{key}"
    # A body is never touched: the upstream got the placeholder.
    body_sha = json.loads(out.split("/body 200 -\n", 1)[1].splitlines()[0])["body_sha256"]
    assert body_sha == hashlib.sha256(f"key={placeholder}".encode()).hexdigest()

    # The echo of the real key came back as the placeholder.
    echo = json.loads(out.split("/bearer 200 -\n", 1)[1].splitlines()[0])
    assert echo["headers"]["authorization"] == f"Bearer {placeholder}"

    # Sent to another host, the placeholder is refused and never arrives there.
    assert "/leak 403 secret-to-wrong-host" in out
    assert "the placeholder of TEST_API_KEY was sent to ok.test" in out
    assert not [s for s in upstream.seen if s.path.startswith(f"/echo/{tag}/leak")]
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in records if r["host"] == "ok.test"] == ["secret-to-wrong-host"]

    # The real key is in nothing the jail or a log got.
    for name, text in [("stdout", out), ("stderr", result.stderr),
                       ("request log", (tmp_path / "requests.log").read_text()),
                       ("audit log", (tmp_path / "audit.jsonl").read_text())]:
        assert key not in text, f"the real key is in the {name}"


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_curl_over_http1_and_http2(jail: Jail, upstream: Upstream, tmp_path: Path, http: str) -> None:
    key = real_key()
    tag = secrets.token_hex(4)
    api = upstream.url("api.test", f"/echo/{tag}")
    script = (
        f"curl -sS {http} -H \"Authorization: Bearer $TEST_API_KEY\" {api}; "
        f"echo; curl -sS {http} -o /dev/null -w '%{{http_code}} %{{http_version}}\\n' "
        f"-H \"x-api-key: $TEST_API_KEY\" {upstream.url('other.test', '/echo/' + tag + '/leak')}"
    )
    result = jail.run(["--js", "true", "--secret", "TEST_API_KEY@api.test"], ["sh", "-c", script],
                      env={"TEST_API_KEY": key})
    assert result.returncode == 0, result.stderr
    assert seen(upstream, tag, "")["authorization"] == f"Bearer {key}"
    echo, status = result.stdout.rsplit("\n", 2)[:2]
    assert PLACEHOLDER.search(json.loads(echo)["headers"]["authorization"])
    assert status == ("403 2" if http == "--http2" else "403 1.1")
    assert key not in result.stdout + result.stderr


def test_plain_http_never_gets_the_key(jail: Jail, upstream: Upstream) -> None:
    key = real_key()
    tag = secrets.token_hex(4)
    url = upstream.url("api.test", f"/echo/{tag}", tls=False)
    result = jail.run(["--js", "true", "--secret", "TEST_API_KEY@api.test"],
                      ["sh", "-c", f"curl -sS -i -H \"Authorization: Bearer $TEST_API_KEY\" {url}"],
                      env={"TEST_API_KEY": key})
    assert "x-httpjail-reason: secret-to-wrong-host" in result.stdout.lower()
    assert "only put in over HTTPS" in result.stdout
    assert not [s for s in upstream.seen if s.path.startswith(f"/echo/{tag}")]


def test_secret_file_and_header(jail: Jail, upstream: Upstream, tmp_path: Path) -> None:
    key = real_key()
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    tag = secrets.token_hex(4)
    token = "internal-" + secrets.token_hex(8)
    script = (
        f"curl -sS -H \"Authorization: Bearer $FILE_KEY\" {upstream.url('api.test', '/echo/' + tag)}; "
        "echo; echo \"token=${SVC_TOKEN:-unset}\""
    )
    result = jail.run(
        ["--js", "true", "--secret-file", f"FILE_KEY={key_file}@api.test", "--header",
         "api.test:X-Internal-Auth:Token ${SVC_TOKEN}", "-vvv"],
        ["sh", "-c", script],
        env={"SVC_TOKEN": token},
    )
    assert result.returncode == 0, result.stderr
    got = seen(upstream, tag, "")
    assert got["authorization"] == f"Bearer {key}" and got["x-internal-auth"] == f"Token {token}"
    assert result.stdout.endswith("token=unset\n")
    for text in (result.stdout, result.stderr):
        assert key not in text and token not in text
    assert "in --weak mode the command runs as you" in result.stderr  # the test runs --weak


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--secret", "MISSING_KEY@api.test"], {}, "the environment variable MISSING_KEY is not set"),
    (["--secret", "K@api.test"], {"K": "short"}, "shorter than 8 characters"),
    (["--secret", "K"], {}, "is not NAME@HOST"),
    (["--header", "api.test:Bad Name:v"], {}, "is not a header name"),
])
def test_bad_secrets_are_refused_before_anything_runs(
    jail: Jail, args: list[str], env: dict[str, str], message: str
) -> None:
    result = jail.run([*args, "--js", "true"], ["true"], env=env)
    assert result.returncode == 2
    assert message in result.stderr


# Ways a secret's host could hand the value back other than as a plain echo in a body.
ECHOES = r"""
import gzip, json, os, ssl, subprocess, sys, urllib.request, urllib.error
api, ws, wsclient = sys.argv[1:4]
key = os.environ["TEST_API_KEY"]
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
auth = {"Authorization": f"Bearer {key}"}
def get(url, headers):
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=ctx)
    except urllib.error.HTTPError as e:
        resp = e
    return resp.status, resp.headers, resp.read()
status, _, body = get(f"{api}/not-http?key={key}", auth)
print("not-http", status, body.decode(errors="replace").replace("\n", " "))
status, headers, body = get(f"{api}/echo-gzip", {**auth, "Accept-Encoding": "gzip"})
if headers.get("Content-Encoding") == "gzip":
    body = gzip.decompress(body)
print("gzip", status, json.loads(body)["headers"]["authorization"])
out = subprocess.run([sys.executable, wsclient, f"{ws}/ws?tell-auth", "hi"], capture_output=True, text=True,
                     env={**os.environ, "WS_AUTHORIZATION": f"Bearer {key}"}).stdout
print("websocket", json.loads(out)["echo"])
"""


def test_echoes_in_error_pages_compressed_bodies_and_websockets_are_replaced(
    jail: Jail, upstream: Upstream
) -> None:
    key = real_key()
    child = [sys.executable, "-c", ECHOES, upstream.url("api.test", ""),
             upstream.url("api.test", "").replace("https://", "wss://"), str(CLIENTS / "wsclient.py")]
    result = jail.run(["--js", "true", "--secret", "TEST_API_KEY@api.test", "-vvv"], child,
                      env={"TEST_API_KEY": key})
    assert result.returncode == 0, result.stderr
    lines = {line.split(" ", 1)[0]: line for line in result.stdout.splitlines()}
    assert lines["not-http"].startswith("not-http 502") and "httpjail-secret-" in lines["not-http"]
    assert PLACEHOLDER.fullmatch(lines["gzip"].removeprefix("gzip 200 Bearer "))
    assert PLACEHOLDER.fullmatch(lines["websocket"].removeprefix("websocket Bearer ").removesuffix(" hi"))
    assert key not in result.stdout + result.stderr


def test_a_header_rule_applies_over_https_only(jail: Jail, upstream: Upstream) -> None:
    tag = secrets.token_hex(4)
    token = "internal-" + secrets.token_hex(8)
    urls = [upstream.url("api.test", f"/echo/{tag}/tls"),
            upstream.url("api.test", f"/echo/{tag}/plain", tls=False)]
    result = jail.run(["--js", "true", "--header", f"api.test:X-Internal-Auth:{token}"],
                      ["sh", "-c", f"curl -sS -o /dev/null {urls[0]} && curl -sS -o /dev/null {urls[1]}"])
    assert result.returncode == 0, result.stderr
    assert seen(upstream, tag, "tls").get("x-internal-auth") == token
    assert "x-internal-auth" not in seen(upstream, tag, "plain")


def test_secrets_are_refused_with_upstream_verification_off(jail: Jail) -> None:
    result = jail.run(["--secret", "K@api.test", "--js", "true"], ["true"],
                      env={"K": real_key(), "HTTPJAIL_DANGER_DISABLE_CERT_VALIDATION": "1"})
    assert result.returncode == 2
    assert "send values only to verified upstreams" in result.stderr
