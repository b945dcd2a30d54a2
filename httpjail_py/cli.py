"""The `httpjail` command: flags in (compatible with coder/httpjail 0.6), a `Config` out,
then `app.run`. User errors print one line naming the flag and value, and exit non-zero;
tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from httpjail_py import __version__
from httpjail_py.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_IN_FLIGHT,
    Bind,
    Config,
    RuleSource,
    RunMode,
    parse_bind,
    parse_resolve,
)
from httpjail_py.credentials import Credentials, RedactingFilter, load_credentials
from httpjail_py.destinations import parse_network
from httpjail_py.errors import ConfigError, HttpjailError
from httpjail_py.ratelimit import parse_rate
from httpjail_py.testmode import parse_test_args, request_from_url

__all__ = ["main", "build_parser", "parse_config"]

SERVER_HTTP = Bind("127.0.0.1", 8080)
SERVER_HTTPS = Bind("127.0.0.1", 8443)
EPHEMERAL = Bind("127.0.0.1", 0)

EXAMPLES = """\
examples:
  httpjail --weak --js "r.host === 'api.openai.com'" --request-log req.log -- codex exec "..."
  httpjail --test GET https://github.com/foo --js "r.host === 'github.com'"
  httpjail --server --js-file rules.js
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="httpjail",
        usage="httpjail [OPTIONS] -- COMMAND [ARGS...]",
        description="Run COMMAND so that its HTTP(S) requests pass a rule-checking, logging proxy.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rules = p.add_argument_group("rules (at most one; none denies everything)")
    rules.add_argument("--js", metavar="CODE",
                       help="JavaScript rule; `r` is the request, the last expression the verdict")
    rules.add_argument("--js-file", metavar="FILE", type=Path,
                       help="JavaScript rule from FILE, re-read when it changes")
    rules.add_argument("--sh", metavar="SCRIPT",
                       help="run SCRIPT per request (HTTPJAIL_URL, ... in its environment); exit 0 allows")
    rules.add_argument("--proc", metavar="PROGRAM",
                       help="one long-running PROGRAM: a JSON line per request in, a verdict line out")
    rules.add_argument("--rule-timeout", metavar="SECS", type=float,
                       help="seconds a --sh script (default 30) or --proc answer (default 5) may take")
    p.add_argument("--request-log", metavar="FILE", type=Path,
                   help="append `<time> <+|-> <METHOD> <URL>` per request")
    p.add_argument("--audit-log", metavar="FILE", type=Path,
                   help="append one JSON object per request (JSON lines)")
    p.add_argument("--weak", action="store_true", help="jail through proxy environment variables only")
    p.add_argument("--cleanup", action="store_true",
                   help="remove the namespaces, links and nftables tables of killed jails, and exit")
    p.add_argument("--server", action="store_true",
                   help="run only the proxy (127.0.0.1:8080 HTTP, :8443 HTTPS)")
    p.add_argument("--test", nargs="+", metavar="[METHOD] URL",
                   help="evaluate the rule for one request; exit 0 allow, 1 deny")
    p.add_argument("--docker-run", action="store_true",
                   help="the command is `[docker run options] IMAGE [CMD...]`: run that container "
                   "in the jail (root)")
    p.add_argument("--timeout", metavar="SECS", type=float,
                   help="stop COMMAND (and its process group) after SECS; exit 124")
    p.add_argument("--resolve", metavar="HOST:PORT:ADDR", action="append", default=[],
                   help="connect to ADDR for HOST:PORT instead of resolving HOST (repeatable)")
    p.add_argument("--allow-private", metavar="CIDR", action="append", default=[],
                   help="let allowed requests reach this private/loopback/link-local range "
                   "(refused by default; repeatable)")
    p.add_argument("--max-connections", metavar="N", type=int, default=DEFAULT_MAX_IN_FLIGHT,
                   help=f"requests in flight per jail; past it a 503 (default {DEFAULT_MAX_IN_FLIGHT})")
    p.add_argument("--rate", metavar="RATE[:BURST]",
                   help="requests per second per jail, in bursts of BURST (default RATE); past it a 429")
    p.add_argument("--header-timeout", metavar="SECS", type=float, default=DEFAULT_HEADER_TIMEOUT,
                   help="close a client connection whose request head is not complete within SECS "
                   f"(default {DEFAULT_HEADER_TIMEOUT:g})")
    p.add_argument("--connect-timeout", metavar="SECS", type=float, default=DEFAULT_CONNECT_TIMEOUT,
                   help="give up on an upstream that has not accepted the connection within SECS; "
                   f"the request gets a 502 (default {DEFAULT_CONNECT_TIMEOUT:g})")
    p.add_argument("--secret", metavar="NAME@HOST[,HOST...]", action="append", default=[],
                   help="hold the environment variable NAME for the command: it sees a placeholder, "
                   "which the proxy replaces with the value only in requests to HOST (repeatable)")
    p.add_argument("--secret-file", metavar="NAME=PATH@HOST[,HOST...]", action="append", default=[],
                   help="as --secret, with the value read from PATH (repeatable)")
    p.add_argument("--header", metavar="HOST:NAME:VALUE", action="append", default=[],
                   help="set this header on every request to HOST (repeatable)")
    p.add_argument("--upstream-ca", metavar="FILE", type=Path, action="append", default=[],
                   help="also trust this CA for upstream TLS, besides the system store (repeatable)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more detail on stderr (-v decisions, -vvv proxy internals)")
    p.add_argument("--version", action="version", version=f"httpjail-py {__version__}")
    p.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def _env_bind(name: str, default: Bind) -> Bind:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return parse_bind(value, default)
    except ValueError as e:
        raise ConfigError(f"{name}={value!r}: {e}") from None


def _check_upstream_ca(path: Path) -> None:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"--upstream-ca {path}: cannot read it: {e.strerror}") from None
    except ValueError:
        raise ConfigError(f"--upstream-ca {path}: no PEM certificate in it") from None


def _rule_source(args: argparse.Namespace) -> RuleSource:
    given = [(flag, value) for flag, value in (
        ("--js", args.js), ("--js-file", args.js_file), ("--sh", args.sh), ("--proc", args.proc),
    ) if value is not None]  # fmt: skip
    if len(given) > 1:
        names = " and ".join(flag for flag, _ in given)
        raise ConfigError(f"{names} cannot be used together: pick one rule")
    if not given:
        return RuleSource(kind="deny-all")  # as httpjail: no rule denies everything
    flag, value = given[0]
    if flag == "--js-file":
        return RuleSource(kind="js-file", path=value)
    return RuleSource(kind=flag[2:], text=value)


def parse_config(argv: Sequence[str]) -> Config:
    """Turn the command line into a Config. Raises ConfigError (and SystemExit for --help)."""
    argv = list(argv)
    rest: list[str] | None = None
    if "--" in argv:
        split = argv.index("--")
        argv, rest = argv[:split], argv[split + 1 :]
    args = build_parser().parse_args(argv)
    command = list(args.command)
    if rest is not None:
        # `httpjail --js ... ls -- -la`: the command began before the first `--`, so
        # that `--` is one of its own arguments.
        command += ["--", *rest] if command else rest

    rule = _rule_source(args)
    if args.rule_timeout is not None:
        if rule.kind not in ("sh", "proc"):
            raise ConfigError("--rule-timeout applies to --sh and --proc rules")
        if args.rule_timeout <= 0:
            raise ConfigError(f"--rule-timeout {args.rule_timeout:g}: must be a positive number of seconds")

    flags = (("--server", args.server), ("--test", args.test), ("--docker-run", args.docker_run),
             ("--cleanup", args.cleanup))
    modes = [name for name, on in flags if on]
    if len(modes) > 1:
        raise ConfigError(f"{' and '.join(modes)} cannot be used together")
    if args.docker_run:
        if args.weak:
            raise ConfigError("--docker-run jails the container's network; it cannot be --weak")
        from httpjail_py.jail.docker.runargs import parse_docker_run

        try:
            parse_docker_run(command)
        except ValueError as e:
            raise ConfigError(f"--docker-run: {e}") from None
    if args.server and args.timeout is not None:
        raise ConfigError("--timeout applies to a command; --server runs no command")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout {args.timeout:g}: must be a positive number of seconds")

    test_method, test_url = "GET", ""
    if args.cleanup:
        mode = RunMode.CLEANUP
    elif args.test:
        if len(args.test) > 2:
            raise ConfigError(f"--test takes [METHOD] URL, got {' '.join(args.test)!r}")
        test_method, test_url = parse_test_args(args.test)
        try:
            request_from_url(test_method, test_url)
        except ValueError as e:
            raise ConfigError(f"--test: {e}") from None
        mode = RunMode.TEST
    elif args.server:
        mode = RunMode.SERVER
    else:
        mode = RunMode.RUN
        if not command:
            raise ConfigError(
                "no command given: use httpjail [OPTIONS] -- COMMAND [ARGS...], or --server / --test"
            )
    if command and mode is not RunMode.RUN:
        raise ConfigError(f"{modes[0]} runs no command, but one was given: {' '.join(command)!r}")

    resolve: dict[tuple[str, int], str] = {}
    for value in args.resolve:
        try:
            key, addr = parse_resolve(value)
        except ValueError as e:
            raise ConfigError(f"--resolve {value!r}: {e}") from None
        resolve[key] = addr
    for path in args.upstream_ca:
        _check_upstream_ca(path)
    allow_private = []
    for value in args.allow_private:
        try:
            allow_private.append(parse_network(value))
        except ValueError as e:
            raise ConfigError(f"--allow-private: {e}") from None

    timeouts = (("--header-timeout", args.header_timeout), ("--connect-timeout", args.connect_timeout))
    for flag, seconds in timeouts:
        if not 0 < seconds < float("inf"):
            raise ConfigError(f"{flag} {seconds:g}: must be a positive number of seconds")
    if args.max_connections < 1:
        raise ConfigError(f"--max-connections {args.max_connections}: must be at least 1")
    rate = None
    if args.rate is not None:
        try:
            rate = parse_rate(args.rate)
        except ValueError as e:
            raise ConfigError(f"--rate: {e}") from None

    try:
        credentials = load_credentials(args.secret, args.secret_file, args.header, os.environ)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    danger = os.environ.get("HTTPJAIL_DANGER_DISABLE_CERT_VALIDATION", "")
    verify_upstream = danger not in ("1", "true", "yes")
    if credentials and not verify_upstream:
        raise ConfigError("--secret, --secret-file and --header send values only to verified upstreams: "
                          "unset HTTPJAIL_DANGER_DISABLE_CERT_VALIDATION")
    if credentials.secrets and args.weak:
        print("httpjail: warning: in --weak mode the command runs as you: it can read your other "
              "processes' environments and your files (--secret-file's too), wherever the secret "
              "is there as well", file=sys.stderr)

    server = mode is RunMode.SERVER
    return Config(
        mode=mode,
        rule=rule,
        rule_timeout=args.rule_timeout,
        command=tuple(command),
        weak=args.weak,
        docker_run=args.docker_run,
        test_method=test_method,
        test_url=test_url,
        request_log=args.request_log,
        audit_log=args.audit_log,
        timeout=args.timeout,
        verbosity=args.verbose,
        http_bind=_env_bind("HTTPJAIL_HTTP_BIND", SERVER_HTTP if server else EPHEMERAL),
        https_bind=_env_bind("HTTPJAIL_HTTPS_BIND", SERVER_HTTPS if server else EPHEMERAL),
        resolve=resolve,
        upstream_cas=tuple(args.upstream_ca),
        allow_private=tuple(allow_private),
        rate=rate,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        connect_timeout=args.connect_timeout,
        credentials=credentials,
        verify_upstream=verify_upstream,
    )


def setup_logging(verbosity: int, credentials: Credentials | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("httpjail: %(message)s"))
    if credentials:
        handler.addFilter(RedactingFilter(credentials))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    ours = logging.INFO if verbosity >= 1 else logging.WARNING
    logging.getLogger("httpjail").setLevel(logging.DEBUG if verbosity >= 2 else ours)
    # mitmproxy's own chatter (client disconnects, TLS handshakes) is internal detail.
    mitm = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING}.get(verbosity, logging.DEBUG)
    logging.getLogger("mitmproxy").setLevel(mitm)


def cleanup() -> int:
    """`--cleanup`: sweep what killed strong and Docker jails left; say what was removed."""
    if os.geteuid() != 0:
        raise ConfigError("--cleanup removes network namespaces and nftables tables: run it as root (sudo)")
    from httpjail_py.jail.linux.liveness import sweep

    removed: list[str] | None = None
    if shutil.which("docker") is not None:
        from httpjail_py.errors import JailSetupError
        from httpjail_py.jail.docker.jail import connect, sweep_with_containers

        try:
            removed = sweep_with_containers(connect())
        except JailSetupError as e:
            print(f"httpjail: no Docker containers swept: {e}", file=sys.stderr)
    if removed is None:
        removed = sweep()
    for resource in removed:
        print(f"httpjail: removed {resource}", file=sys.stderr)
    print(f"httpjail: cleanup done, {len(removed)} leftover resources removed", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # Imported here, inside the try: loading mitmproxy takes a moment, and a Ctrl-C
        # during it must end quietly like any other.
        from httpjail_py import app

        config = parse_config(sys.argv[1:] if argv is None else argv)
        setup_logging(config.verbosity, config.credentials)
        if config.mode is RunMode.CLEANUP:
            return cleanup()
        return asyncio.run(app.run(config))
    except HttpjailError as e:
        print(f"httpjail: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def run_and_exit() -> NoReturn:
    """The `httpjail` command: `main()`, then the process ends at once with its status.

    By then everything worth keeping is flushed and closed (logs, the jail, the proxy);
    what remains is the interpreter taking mitmproxy's modules apart, about 0.1 s that
    the user would wait for nothing (see `jail.signals.release_signals`, which ends the
    process the same way on a late signal)."""
    status = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
