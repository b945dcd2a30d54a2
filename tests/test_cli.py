"""The `httpjail` command line (cli.py): flags in, a Config or a one-line error out."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from httpjail_py import __version__
from httpjail_py.cli import main, parse_config
from httpjail_py.config import RunMode
from httpjail_py.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """`main(argv)` in-process: (exit status, stdout, stderr). Undoes its logging setup."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("httpjail", "mitmproxy")}

    def run(*argv: str) -> tuple[int, str, str]:
        status = main(list(argv))
        out = capsys.readouterr()
        return status, out.out, out.err

    yield run
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def httpjail(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return subprocess.run(
        [sys.executable, "-m", "httpjail_py", *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )


# --- one-line errors, exit 2 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--js", "true", "--js-file", "r.js", "--", "true"],
         "--js and --js-file cannot be used together: pick one rule"),
        (["--js", "true"],
         "no command given: use httpjail [OPTIONS] -- COMMAND [ARGS...], or --server / --test"),
        (["--js", "true", "--"], "no command given"),
        ([], "no command given"),
        (["--server", "--timeout", "5"], "--timeout applies to a command; --server runs no command"),
        (["--test", "https://x/", "--", "curl", "https://x/"],
         "--test runs no command, but one was given: 'curl https://x/'"),
        (["--server", "--", "sleep", "1"], "--server runs no command, but one was given: 'sleep 1'"),
        (["--server", "--test", "https://x/"], "--server and --test cannot be used together"),
        (["--docker-run", "--weak", "--", "alpine", "true"],
         "--docker-run jails the container's network; it cannot be --weak"),
        (["--docker-run", "--", "--network", "host", "alpine"],
         "--docker-run: docker run option --network is not allowed"),
        (["--timeout", "0", "--", "true"], "--timeout 0: must be a positive number of seconds"),
        (["--timeout", "-1", "--", "true"], "--timeout -1: must be a positive number of seconds"),
        (["--test", "GET", "https://x/", "extra"], "--test takes [METHOD] URL, got 'GET https://x/ extra'"),
        (["--resolve", "ok.test:443", "--", "true"],
         "--resolve 'ok.test:443': 'ok.test:443' is not HOST:PORT:ADDR"),
        (["--resolve", "ok.test:443:nowhere", "--", "true"],
         "--resolve 'ok.test:443:nowhere': 'nowhere' is not an IP address"),
    ],
)
def test_bad_combinations_exit_2_with_one_line(cli: Cli, argv: list[str], error: str) -> None:
    status, out, err = cli(*argv)
    assert status == 2
    assert out == ""
    assert err.startswith("httpjail: error: ") and err.count("\n") == 1
    assert error in err


def test_upstream_ca_missing_file(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    status, _, err = cli("--upstream-ca", str(missing), "--", "true")
    assert status == 2
    assert err == f"httpjail: error: --upstream-ca {missing}: cannot read it: No such file or directory\n"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a certificate\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
        b"-----END PRIVATE KEY-----\n",
    ],
    ids=["empty", "text", "bad-base64-cert", "key-only"],
)
def test_upstream_ca_that_is_not_a_pem_certificate(cli: Cli, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(content)
    status, _, err = cli("--upstream-ca", str(path), "--", "true")
    assert status == 2
    assert err == f"httpjail: error: --upstream-ca {path}: no PEM certificate in it\n"


def test_upstream_ca_directory(cli: Cli, tmp_path: Path) -> None:
    status, _, err = cli("--upstream-ca", str(tmp_path), "--", "true")
    assert status == 2
    assert err == f"httpjail: error: --upstream-ca {tmp_path}: cannot read it: Is a directory\n"


def test_upstream_ca_with_a_certificate_is_taken(tmp_path: Path) -> None:
    from httpjail_py.ca import generate_ca

    path = tmp_path / "ca.pem"
    path.write_bytes(generate_ca()[1])
    config = parse_config(["--upstream-ca", str(path), "--upstream-ca", str(path), "--", "true"])
    assert config.upstream_cas == (path, path)


def test_unknown_flag_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse_config(["--no-such-flag", "--", "true"])
    assert e.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"httpjail-py {__version__}\n"


# --- what a good command line becomes -----------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["--js", "true", "--", "curl", "-s", "https://x/"], ("curl", "-s", "https://x/")),
        (["--js", "true", "--", "sh", "-c", "echo --"], ("sh", "-c", "echo --")),
        (["--js", "true", "--", "git", "log", "--", "README"], ("git", "log", "--", "README")),
        (["--js", "true", "--", "--weird-name"], ("--weird-name",)),
        (["--js", "true", "ls", "-la"], ("ls", "-la")),
        # why: without a leading `--`, a later `--` belongs to the command, not to us.
        (["--js", "true", "git", "log", "--", "README"], ("git", "log", "--", "README")),
    ],
)
def test_command_after_double_dash_reaches_the_child_untouched(
    argv: list[str], command: tuple[str, ...]
) -> None:
    config = parse_config(argv)
    assert config.mode is RunMode.RUN
    assert config.command == command


def test_flags_become_config(tmp_path: Path) -> None:
    config = parse_config([
        "--weak", "--js", "r.host === 'a'", "--request-log", str(tmp_path / "r.log"),
        "--audit-log", str(tmp_path / "a.jsonl"), "--timeout", "2.5", "-vv",
        "--resolve", "A.test:443:127.0.0.1", "--", "true",
    ])
    assert config.weak and config.rule.kind == "js" and config.rule.text == "r.host === 'a'"
    assert config.request_log == tmp_path / "r.log"
    assert config.audit_log == tmp_path / "a.jsonl"
    assert config.timeout == 2.5 and config.verbosity == 2
    assert config.resolve == {("a.test", 443): "127.0.0.1"}
    assert config.verify_upstream is True


def test_js_file_and_no_rule(tmp_path: Path) -> None:
    js_file = parse_config(["--js-file", str(tmp_path / "r.js"), "--server"])
    assert js_file.mode is RunMode.SERVER
    assert (js_file.rule.kind, js_file.rule.path) == ("js-file", tmp_path / "r.js")
    assert parse_config(["--test", "https://x/"]).rule.kind == "deny-all"


def test_danger_variable_turns_off_upstream_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPJAIL_DANGER_DISABLE_CERT_VALIDATION", "1")
    assert parse_config(["--server"]).verify_upstream is False
    monkeypatch.setenv("HTTPJAIL_DANGER_DISABLE_CERT_VALIDATION", "0")
    assert parse_config(["--server"]).verify_upstream is True


def test_config_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(["--js", "a", "--js-file", "b", "--", "true"])
    assert e.value.exit_code == 2


# --- rules through the CLI ----------------------------------------------------------------


def test_no_rule_flag_denies_everything(cli: Cli, config_home: Path) -> None:
    assert cli("--test", "https://example.test/") == (1, "DENY GET https://example.test/\n", "")


def test_missing_js_file(cli: Cli, config_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "rules.js"
    status, out, err = cli("--js-file", str(missing), "--test", "https://x/")
    assert (status, out) == (2, "")
    assert err == f"httpjail: error: --js-file {missing}: cannot read it: No such file or directory\n"


def test_js_file_rule_through_the_cli(cli: Cli, config_home: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.js"
    rules.write_text("// only the API\nconst hosts = ['api.test'];\nhosts.includes(r.host)\n")
    allowed = cli("--js-file", str(rules), "--test", "https://api.test/v1")
    assert allowed == (0, "ALLOW GET https://api.test/v1\n", "")
    assert cli("--js-file", str(rules), "--test", "https://b.test/") == (1, "DENY GET https://b.test/\n", "")


def test_syntax_error_at_startup_exits_2_with_the_line(tmp_path: Path) -> None:
    result = httpjail(tmp_path, "--js", "const a = 1;\nconst b = ;", "--test", "https://x.test/")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "httpjail: error: --js: JavaScript does not compile at line 2: "
        "SyntaxError: unexpected token in expression: ';'\n"
    )


def test_help_shows_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "httpjail [OPTIONS] -- COMMAND [ARGS...]" in out
    assert "--js-file FILE" in out and "--test [METHOD] URL" in out
