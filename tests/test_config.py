"""Bind and --resolve syntax (config.py), and the bind environment variables (cli.py)."""

from __future__ import annotations

import pytest

from httpjail_py.cli import parse_config
from httpjail_py.config import Bind, parse_bind, parse_resolve
from httpjail_py.errors import ConfigError

DEFAULT = Bind("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9000", Bind("127.0.0.1", 9000)),
        (":9000", Bind("127.0.0.1", 9000)),
        ("0", Bind("127.0.0.1", 0)),
        ("65535", Bind("127.0.0.1", 65535)),
        ("0.0.0.0:9000", Bind("0.0.0.0", 9000)),
        ("10.1.2.3:1", Bind("10.1.2.3", 1)),
        ("[::1]:9000", Bind("::1", 9000)),
        ("[2001:DB8::1]:443", Bind("2001:db8::1", 443)),
        ("[::]", Bind("::", 8080)),
        ("192.168.0.1", Bind("192.168.0.1", 8080)),
        ("::1", Bind("::1", 8080)),
        ("  :9000 ", Bind("127.0.0.1", 9000)),
        ("", DEFAULT),
    ],
)
def test_parse_bind(value: str, expected: Bind) -> None:
    assert parse_bind(value, DEFAULT) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("65536", "not a port number"),
        (":99999", "not a port number"),
        (":", "not a port number"),
        (":http", "not a port number"),
        ("-1", "not an IP address"),
        ("localhost:8080", "not an IP address"),
        ("localhost", "not an IP address"),
        ("1.2.3.4:", "not a port number"),
        ("1.2.3.4:80:90", "not an IP address"),
        ("999.1.1.1:80", "not an IP address"),
        ("[::1", "missing ']'"),
        ("[::1]9000", "expected ':port' after ']'"),
        ("[::1]:", "not a port number"),
        ("[nonsense]:80", "not an IP address"),
        # why: str.isdigit() is true for these, and int() then fails or reads them as 3.
        ("²", "not"),
        (":٣", "not a port number"),
    ],
)
def test_parse_bind_rejects(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_bind(value, DEFAULT)


def test_bind_prints_back_in_its_own_syntax() -> None:
    assert str(Bind("127.0.0.1", 8080)) == "127.0.0.1:8080"
    assert str(Bind("::1", 8443)) == "[::1]:8443"
    for text in ("127.0.0.1:8080", "[::1]:8443"):
        assert str(parse_bind(text, DEFAULT)) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ok.test:443:127.0.0.1", (("ok.test", 443), "127.0.0.1")),
        ("OK.Test.:80:10.0.0.1", (("ok.test", 80), "10.0.0.1")),
        ("v6.test:8443:[::1]", (("v6.test", 8443), "::1")),
        ("v6.test:8443:2001:db8::2", (("v6.test", 8443), "2001:db8::2")),
    ],
)
def test_parse_resolve(value: str, expected: tuple[tuple[str, int], str]) -> None:
    assert parse_resolve(value) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("ok.test:443", "is not HOST:PORT:ADDR"),
        ("ok.test", "is not HOST:PORT:ADDR"),
        (":443:127.0.0.1", "is not HOST:PORT:ADDR"),
        ("ok.test:https:127.0.0.1", "not a port number"),
        ("ok.test:70000:127.0.0.1", "not a port number"),
        ("ok.test:443:", "not an IP address"),
        ("ok.test:443:example.com", "not an IP address"),
    ],
)
def test_parse_resolve_rejects(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_resolve(value)


# --- HTTPJAIL_HTTP_BIND / HTTPJAIL_HTTPS_BIND through the CLI ------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("HTTPJAIL_HTTP_BIND", raising=False)
    monkeypatch.delenv("HTTPJAIL_HTTPS_BIND", raising=False)
    return monkeypatch


def test_server_binds_default_to_8080_and_8443(clean_env: pytest.MonkeyPatch) -> None:
    config = parse_config(["--server", "--js", "true"])
    assert config.http_bind == Bind("127.0.0.1", 8080)
    assert config.https_bind == Bind("127.0.0.1", 8443)


def test_weak_jail_binds_default_to_ephemeral_ports(clean_env: pytest.MonkeyPatch) -> None:
    config = parse_config(["--weak", "--js", "true", "--", "true"])
    assert config.http_bind == Bind("127.0.0.1", 0)
    assert config.https_bind == Bind("127.0.0.1", 0)


@pytest.mark.parametrize("mode", [["--server"], ["--weak", "--", "true"]])
def test_bind_variables_override(clean_env: pytest.MonkeyPatch, mode: list[str]) -> None:
    clean_env.setenv("HTTPJAIL_HTTP_BIND", "9001")
    clean_env.setenv("HTTPJAIL_HTTPS_BIND", "[::1]:9443")
    config = parse_config(["--js", "true", *mode])
    assert config.http_bind == Bind("127.0.0.1", 9001)
    assert config.https_bind == Bind("::1", 9443)


def test_bind_variable_with_only_an_address_keeps_the_default_port(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("HTTPJAIL_HTTP_BIND", "0.0.0.0")
    config = parse_config(["--server"])
    assert config.http_bind == Bind("0.0.0.0", 8080)
    assert config.https_bind == Bind("127.0.0.1", 8443)


def test_bad_bind_variable_names_the_variable_and_value(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTPJAIL_HTTPS_BIND", "localhost:x")
    with pytest.raises(ConfigError) as e:
        parse_config(["--server"])
    assert str(e.value).startswith("HTTPJAIL_HTTPS_BIND='localhost:x': ")
    assert e.value.exit_code == 2
