"""Weak mode as the jailed program sees it: its environment, its stdin and stdout.

The child is a small Python or sh program run through the real CLI; it reports what it
sees (environment, whether the proxy port answers) as JSON on stdout.
"""

from __future__ import annotations

import json
import re
import ssl
import sys
from pathlib import Path

import pytest

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")
CA_VARS = (
    "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO", "DENO_CERT", "PIP_CERT", "AWS_CA_BUNDLE",
    "CARGO_HTTP_CAINFO", "HTTPJAIL_CA_CERT",
)  # fmt: skip

# Runs inside the jail: the environment, and whether each proxy URL's port accepts a
# connection while the child runs.
REPORT = f"""
import json, os, socket, urllib.parse
ports = {{}}
for name in {PROXY_VARS!r}:
    url = urllib.parse.urlsplit(os.environ[name])
    with socket.socket() as s:
        s.settimeout(2)
        ports[name] = s.connect_ex((url.hostname, url.port)) == 0
print(json.dumps({{"env": dict(os.environ), "open": ports}}))
"""


def system_bundle() -> Path:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise AssertionError("no system CA bundle on this machine")


_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n(.*?)-----END CERTIFICATE-----", re.S)


def certs(path: Path) -> set[bytes]:
    """The certificates in a PEM file, as their base64 bodies without line breaks."""
    return {re.sub(rb"\s", b"", body) for body in _PEM.findall(path.read_bytes())}


def report(jail, env=None, args=()):
    result = jail.run(list(args), [sys.executable, "-c", REPORT], env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_proxy_variables_point_at_a_listening_local_port(jail):
    seen = report(jail, env={"HTTP_PROXY": "http://corp.example:3128", "ALL_PROXY": "socks5://x:1"})
    env = seen["env"]
    urls = {name: env.get(name) for name in PROXY_VARS}
    for name, url in urls.items():
        assert url is not None and url.startswith("http://127.0.0.1:"), (name, url)
        assert int(url.rsplit(":", 1)[1]) > 0
    assert seen["open"] == {name: True for name in PROXY_VARS}


def test_no_proxy_from_the_caller_is_removed(jail):
    env = report(jail, env={"NO_PROXY": "ok.test,*", "no_proxy": "*"})["env"]
    assert "NO_PROXY" not in env and "no_proxy" not in env


def test_every_ca_variable_names_a_bundle_with_system_cas_and_ours(jail, config_home):
    env = report(jail)["env"]
    missing = [name for name in CA_VARS if not env.get(name)]
    assert not missing, f"not set in the child: {missing}"
    ours = config_home / "httpjail" / "ca-cert.pem"
    (our_cert,) = certs(ours)
    system = certs(system_bundle())
    assert len(system) > 10
    assert Path(env["HTTPJAIL_CA_CERT"]).read_bytes() == ours.read_bytes()
    assert Path(env["SSL_CERT_DIR"]).is_dir()
    for name in set(CA_VARS) - {"SSL_CERT_DIR", "HTTPJAIL_CA_CERT"}:
        bundle = certs(Path(env[name]))
        assert our_cert in bundle, name
        assert system <= bundle, f"{name} lacks system CAs"


def test_ca_variables_let_clients_through_the_proxy(jail, upstream, tmp_path):
    # curl trusts CURL_CA_BUNDLE, Python's ssl SSL_CERT_FILE: both reach an allowed HTTPS
    # upstream through httpjail's interception.
    url = upstream.url("ok.test", "/echo?via=jail")
    client = tmp_path / "client.py"
    client.write_text(f"import urllib.request\nprint(urllib.request.urlopen({url!r}, timeout=10).status)\n")
    script = f"curl -sS -o /dev/null -w '%{{http_code}}\\n' {url} && {sys.executable} {client}"
    result = jail.run(["--js", "r.host === 'ok.test'"], ["sh", "-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "200"]


def test_stdin_passes_through_to_the_child(jail):
    data = "line one\nline two\n" * 1000
    result = jail.run([], ["cat"], input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


def test_stdout_carries_only_the_childs_output(jail, upstream):
    denied = upstream.url("other.test", "/echo")
    script = f"echo child-out; echo child-err >&2; curl -s -o /dev/null {denied}; echo child-done"
    result = jail.run(["-v", "--js", "r.host === 'ok.test'"], ["sh", "-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "child-out\nchild-done\n"
    ours = [line for line in result.stderr.splitlines() if line != "child-err"]
    assert ours, "expected httpjail's own -v lines on stderr"
    assert all(line.startswith("httpjail: ") for line in ours), ours
    assert "child-err" in result.stderr.splitlines()


def test_ssl_cert_dir_alone_finds_our_ca_and_the_system_cas(jail):
    hashed = sorted(Path("/etc/ssl/certs").glob("*.0"))
    if not hashed:
        pytest.skip("no hashed system CA directory on this machine")
    system = hashed[0]
    script = (
        'openssl verify -no-CAfile -CApath "$SSL_CERT_DIR" "$HTTPJAIL_CA_CERT" && '
        f'openssl verify -no-CAfile -CApath "$SSL_CERT_DIR" {system}'
    )
    result = jail.run([], ["sh", "-c", script])
    assert result.returncode == 0, result.stdout + result.stderr
