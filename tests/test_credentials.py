"""httpjail_py/credentials.py: the flags' syntax, placeholders, host matching, and the
redaction that keeps real values out of responses and logs."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from httpjail_py.credentials import (
    PLACEHOLDER_PREFIX,
    Credentials,
    HeaderRule,
    RedactingFilter,
    Secret,
    host_matches,
    load_credentials,
    parse_header,
    parse_secret,
    parse_secret_file,
)

REAL = "sk-proj-" + "Ab3" * 20  # 68 characters, like a real API key


def test_parse_secret() -> None:
    assert parse_secret("OPENAI_API_KEY@api.openai.com") == ("OPENAI_API_KEY", ("api.openai.com",))
    assert parse_secret("K@A.example.,*.example.org") == ("K", ("a.example", "*.example.org"))


@pytest.mark.parametrize("spec", ["KEY", "KEY@", "@host", "1KEY@host", "K-EY@host", "KEY@ho st",
                                  "KEY@host:443", "KEY@*", "KEY@a.*.b", "KEY@host,"])
def test_parse_secret_refuses(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_secret(spec)


def test_parse_secret_file_allows_at_signs_in_the_path() -> None:
    assert parse_secret_file("K=/run/keys/a@b@api.test") == ("K", Path("/run/keys/a@b"), ("api.test",))
    with pytest.raises(ValueError):
        parse_secret_file("K@api.test")


def test_parse_header_keeps_colons_in_the_value() -> None:
    rule = parse_header("svc.internal:X-Auth:Bearer a:b:c")
    assert (rule.host, rule.name, rule.value) == ("svc.internal", "X-Auth", "Bearer a:b:c")
    for bad in ("svc.internal:X-Auth", "svc.internal:X Auth:v", "svc.internal:X-Auth:a\nb", ":X:v"):
        with pytest.raises(ValueError):
            parse_header(bad)


def test_host_matching() -> None:
    assert host_matches("api.test", "API.test.")
    assert not host_matches("api.test", "x.api.test")
    assert host_matches("*.example.com", "a.b.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert not host_matches("*.example.com", "evilexample.com")


def test_a_placeholder_is_as_long_as_the_value_when_it_can_be() -> None:
    secret = Secret.make("K", REAL, ["api.test"], "K")
    assert secret.placeholder.startswith(PLACEHOLDER_PREFIX)
    assert len(secret.placeholder) == len(REAL) and secret.echo_mask == secret.placeholder
    assert Secret.make("K", REAL, ["api.test"], "K").placeholder != secret.placeholder
    short = Secret.make("K", "12345678", ["api.test"], "K")
    assert len(short.placeholder) > len(PLACEHOLDER_PREFIX) + 24
    assert short.echo_mask == "********"
    assert REAL not in repr(secret)


@pytest.mark.parametrize("value", ["short", "with\nnewline-inside", "nul\0character-inside"])
def test_values_that_cannot_be_held_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        Secret.make("K", value, ["api.test"], "the value of K")


def test_load_credentials(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("file-secret-value\n")
    creds = load_credentials(["A@api.test"], [f"B={key_file}@b.test"], ["c.test:X-Auth:tokentoken"],
                             {"A": REAL})
    assert [(s.name, s.value, s.hosts) for s in creds.secrets] == [
        ("A", REAL, ("api.test",)), ("B", "file-secret-value", ("b.test",))]
    assert creds.headers == (HeaderRule("c.test", "X-Auth", "tokentoken"),)
    with pytest.raises(ValueError, match="--secret A@api.test: the environment variable A is not set"):
        load_credentials(["A@api.test"], [], [], {})
    with pytest.raises(ValueError, match="--secret-file .*cannot read"):
        load_credentials([], [f"B={tmp_path / 'missing'}@b.test"], [], {})
    with pytest.raises(ValueError, match="A given more than once"):
        load_credentials(["A@api.test"], [f"A={key_file}@b.test"], [], {"A": REAL})


def test_hide_from_children_replaces_the_value_wherever_it_is() -> None:
    creds = load_credentials(["A@api.test"], [], [], {"A": REAL})
    [secret] = creds.secrets
    environ = {"A": REAL, "COPY": f"Bearer {REAL}", "OTHER": "x"}
    creds.hide_from_children(environ)
    assert environ == {"A": secret.placeholder, "COPY": f"Bearer {secret.placeholder}", "OTHER": "x"}


def _one_secret() -> tuple[Credentials, Secret]:
    secret = Secret.make("K", REAL, ["api.test"], "K")
    return Credentials((secret,)), secret


def test_redaction_of_a_stream_at_every_split() -> None:
    creds, secret = _one_secret()
    body = f'{{"error": "invalid key {REAL}", "again": "{REAL[:10]}"}}'.encode()
    expected = body.replace(REAL.encode(), secret.placeholder.encode())
    for split in range(len(body) + 1):
        redact = creds.response_redactor()
        out = redact(body[:split]) + redact(body[split:]) + redact(b"")
        assert out == expected, split


def test_redaction_holds_back_only_what_may_start_a_value() -> None:
    creds, _ = _one_secret()
    redact = creds.response_redactor()
    assert redact(b"data: token\n\n") == b"data: token\n\n"  # an SSE event goes on at once
    assert redact(b"data: " + REAL[:5].encode()) == b"data: "
    assert redact(b"XYZ") == REAL[:5].encode() + b"XYZ"


def test_the_log_filter_redacts_messages_and_tracebacks() -> None:
    creds, secret = _one_secret()
    record = logging.LogRecord("httpjail", logging.WARNING, __file__, 1, "got %s", (REAL,), None)
    try:
        raise RuntimeError(REAL)
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter(creds).filter(record)
    text = logging.Formatter().format(record)
    assert REAL not in text and secret.placeholder in text


def test_a_header_value_can_come_from_the_environment_which_the_command_then_lacks() -> None:
    creds = load_credentials([], [], ["svc.test:Authorization:Bearer ${SVC_TOKEN}"], {"SVC_TOKEN": REAL})
    assert creds.headers == (HeaderRule("svc.test", "Authorization", f"Bearer {REAL}", (REAL,)),)
    environ = {"SVC_TOKEN": REAL, "COPY": REAL, "OTHER": "x"}
    creds.hide_from_children(environ)
    assert environ == {"COPY": "*" * len(REAL), "OTHER": "x"}
    with pytest.raises(ValueError, match="the environment variable SVC_TOKEN is not set"):
        load_credentials([], [], ["svc.test:Authorization:Bearer ${SVC_TOKEN}"], {})


def test_a_process_that_holds_secrets_is_undumpable() -> None:
    """Undumpable, a process's memory and /proc/<pid>/environ (which keeps the environment
    it started with, real values included) cannot be read by another process of the same
    user: the weak jail's command, or a sudo-less strong jail's root (see enter.py)."""
    code = (
        "import ctypes, os\n"
        "from httpjail_py.credentials import load_credentials\n"
        "creds = load_credentials(['K@api.test'], [], [], os.environ)\n"
        "creds.hide_from_children(os.environ)\n"
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), os.environ['K'][:16])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"K": REAL, "PATH": "/usr/bin:/bin"}, cwd=Path(__file__).parent.parent)
    assert result.stdout.split() == ["0", "httpjail-secret-"], result.stderr


def test_a_value_that_holds_another_is_replaced_whole() -> None:
    inner = Secret.make("A", "abcdefghij", ["a.test"], "A")
    outer = Secret.make("B", "xx-abcdefghij-yy-" + "z" * 30, ["a.test"], "B")
    creds = Credentials((inner, outer))
    assert creds.redact(f"got {outer.value}") == f"got {outer.placeholder}"
    assert creds.redact_bytes(outer.value.encode()) == outer.placeholder.encode()


def test_a_mask_keeps_the_byte_length_of_a_value_that_is_not_ascii() -> None:
    secret = Secret.make("K", "pässwörd-ünïcode", ["a.test"], "K")
    creds = Credentials((secret,))
    body = f"[{secret.value}]".encode()
    assert len(creds.redact_bytes(body)) == len(body)
    assert secret.value.encode() not in creds.redact_bytes(body)


def test_a_header_value_from_the_environment_is_checked_without_showing_it() -> None:
    with pytest.raises(ValueError) as caught:
        load_credentials([], [], ["svc.test:X-Auth:${TOKEN}"], {"TOKEN": "secret-part\nmore"})
    assert "line break" in str(caught.value) and "secret-part" not in str(caught.value)
