"""Secrets the proxy holds for the jail: the jailed command gets a placeholder, and the
real value is put in only on the way to the hosts it belongs to.

`--secret NAME@HOST[,HOST...]` takes the value of the environment variable NAME;
`--secret-file NAME=PATH@HOST[,HOST...]` reads it from PATH. The jailed command sees
NAME=httpjail-secret-<random>. A host is a name (`api.openai.com`) or every name under a
domain (`*.example.com`).

`--header HOST:Name:Value` sets a header on every request to HOST. Its value is treated as
a secret too: it never reaches a log. `${NAME}` in it is the value of the environment
variable NAME, which the jailed command then does not get (a value on the command line
itself is visible to every process on the host, as the process list shows it).

Everything here is pure (no I/O but reading the file and the process's own environment):
`proxy/injector.py` applies it to flows.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import secrets
import string
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MIN_SECRET_LENGTH",
    "PLACEHOLDER_PREFIX",
    "Credentials",
    "HeaderRule",
    "RedactingFilter",
    "Secret",
    "load_credentials",
    "host_matches",
    "parse_header",
    "parse_secret",
    "parse_secret_file",
    "read_secret_file",
]

PLACEHOLDER_PREFIX = "httpjail-secret-"
# Shorter values would be found by chance in bodies and headers that never held them.
MIN_SECRET_LENGTH = 8
# A placeholder has at least this many random characters (128 bits and more).
_MIN_RANDOM = 25
_ALPHABET = string.ascii_lowercase + string.digits
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\Z")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # an HTTP header name (RFC 9110)
PR_SET_DUMPABLE = 4


def host_matches(pattern: str, host: str) -> bool:
    """`api.example.com` matches itself only; `*.example.com` every name below it."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _parse_hosts(text: str, spec: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower().rstrip(".") for h in text.split(","))
    for host in hosts:
        if not _HOST.match(host):
            raise ValueError(f"{spec!r}: {host!r} is not a host name (or *.domain)")
    return hosts


def _parse_name(name: str, spec: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{spec!r}: {name!r} is not an environment variable name")
    return name


def parse_secret(spec: str) -> tuple[str, tuple[str, ...]]:
    """`NAME@HOST[,HOST...]` -> (name, hosts). Raises ValueError."""
    name, at, hosts = spec.partition("@")
    if not at or not hosts:
        raise ValueError(f"{spec!r} is not NAME@HOST[,HOST...]")
    return _parse_name(name, spec), _parse_hosts(hosts, spec)


def parse_secret_file(spec: str) -> tuple[str, Path, tuple[str, ...]]:
    """`NAME=PATH@HOST[,HOST...]` -> (name, path, hosts). Raises ValueError."""
    name, eq, rest = spec.partition("=")
    path, at, hosts = rest.rpartition("@")
    if not eq or not at or not path or not hosts:
        raise ValueError(f"{spec!r} is not NAME=PATH@HOST[,HOST...]")
    return _parse_name(name, spec), Path(path), _parse_hosts(hosts, spec)


def read_secret_file(path: Path) -> str:
    """The file's text without its final newline. Raises OSError, ValueError."""
    data = path.read_bytes()
    try:
        return data.decode().removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def _mask(value: str) -> str:
    """Stars, as many as `value` has bytes: a body keeps its length (its Content-Length)."""
    return "*" * len(value.encode())


def _check_value(value: str, what: str) -> None:
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"{what} is shorter than {MIN_SECRET_LENGTH} characters: too short to hold safely")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{what} contains a line break or NUL, which no header may carry")


@dataclass(frozen=True)
class Secret:
    name: str  # the environment variable the jailed command finds the placeholder in
    value: str = field(repr=False)
    hosts: tuple[str, ...]
    placeholder: str = ""

    @classmethod
    def make(cls, name: str, value: str, hosts: Iterable[str], what: str) -> Secret:
        """Raises ValueError when `value` cannot be held (`what` names it in the message)."""
        _check_value(value, what)
        # As long as the value when it can be, so that an echo of the value in a response
        # can be replaced without changing the body's length (its Content-Length).
        random_part = max(_MIN_RANDOM, len(value.encode()) - len(PLACEHOLDER_PREFIX))
        placeholder = PLACEHOLDER_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(random_part))
        return cls(name, value, tuple(hosts), placeholder)

    @property
    def echo_mask(self) -> str:
        """What an echo of the value in a response becomes: the placeholder, or a mask of
        as many bytes when the value is too short for a placeholder of its length."""
        return self.placeholder if len(self.placeholder) == len(self.value.encode()) else _mask(self.value)

    def belongs_to(self, host: str) -> bool:
        return any(host_matches(pattern, host) for pattern in self.hosts)


@dataclass(frozen=True)
class HeaderRule:
    host: str
    name: str
    value: str = field(repr=False)
    # The values of the ${NAME}s in it: kept out of logs and the jail on their own too.
    parts: tuple[str, ...] = field(default=(), repr=False)


def parse_header(spec: str) -> HeaderRule:
    """`HOST:Name:Value` -> HeaderRule. Raises ValueError."""
    host, _, rest = spec.partition(":")
    name, colon, value = rest.partition(":")
    if not colon:
        raise ValueError(f"{spec!r} is not HOST:Name:Value")
    (host,) = _parse_hosts(host, spec)
    if not _TOKEN.match(name):
        raise ValueError(f"{spec!r}: {name!r} is not a header name")
    value = value.strip()
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{spec!r}: a header value cannot hold a line break or NUL")
    return HeaderRule(host, name, value)


@dataclass(frozen=True)
class Credentials:
    """All the secrets and header rules of a run."""

    secrets: tuple[Secret, ...] = ()
    headers: tuple[HeaderRule, ...] = ()
    hidden: tuple[str, ...] = ()  # environment variables the jailed command does not get

    def __bool__(self) -> bool:
        return bool(self.secrets or self.headers)

    def placeholders_in(self, text: str) -> list[Secret]:
        if PLACEHOLDER_PREFIX not in text:
            return []
        return [s for s in self.secrets if s.placeholder in text]

    def headers_for(self, host: str) -> list[HeaderRule]:
        return [rule for rule in self.headers if host_matches(rule.host, host)]

    def guards(self, host: str) -> bool:
        """Whether responses from `host` may echo a value we sent it."""
        return any(s.belongs_to(host) for s in self.secrets) or bool(self.headers_for(host))

    @functools.cached_property
    def _header_masks(self) -> list[tuple[str, str]]:
        values = [value for rule in self.headers for value in (rule.value, *rule.parts)]
        return [(value, _mask(value)) for value in values if len(value) >= MIN_SECRET_LENGTH]

    @functools.cached_property
    def _values(self) -> list[tuple[str, str]]:
        """(real value, what it becomes where the jail or a log could see it)."""
        return _longest_first([(s.value, s.echo_mask) for s in self.secrets] + self._header_masks)

    def redact(self, text: str) -> str:
        """`text` with every real value replaced (for logs and messages)."""
        for value, mask in self._values:
            if value in text:
                text = text.replace(value, mask)
        return text

    @functools.cached_property
    def _byte_values(self) -> list[tuple[bytes, bytes]]:
        return [(value.encode(), mask.encode()) for value, mask in self._values]

    def redact_bytes(self, data: bytes) -> bytes:
        for value, mask in self._byte_values:
            data = data.replace(value, mask)
        return data

    def response_redactor(self) -> Callable[[bytes], bytes]:
        """A stream filter that replaces every real value in a body, also one split across
        chunks. Bytes that may be the start of a value are held back until the next chunk
        tells (only those: an SSE event is never held). Call it with b"" at the end."""
        pairs = self._byte_values
        held = b""

        def redact(chunk: bytes) -> bytes:
            nonlocal held
            data = held + chunk
            for value, mask in pairs:
                data = data.replace(value, mask)
            keep = 0 if not chunk else max((_partial_tail(data, value) for value, _ in pairs), default=0)
            held = data[len(data) - keep:] if keep else b""
            return data[: len(data) - keep]

        return redact

    def hide_from_children(self, environ: MutableMapping[str, str]) -> None:
        """Give every process started from now on the placeholders, not the values: each
        variable holding a value gets the placeholder in its place (the --secret one, and
        any other that holds the same value; a --header value is masked), and the
        variables a --header took a value from are removed. Also makes this process
        undumpable, so that
        a process of the same user cannot read the values from its memory or from
        /proc/<pid>/environ (which keeps the environment the process started with)."""
        replace = _longest_first([(s.value, s.placeholder) for s in self.secrets] + self._header_masks)
        for name in self.hidden:
            environ.pop(name, None)
        for name, value in list(environ.items()):
            hidden = value
            for real, stand_in in replace:
                hidden = hidden.replace(real, stand_in)
            if hidden != value:
                environ[name] = hidden
        for secret in self.secrets:
            environ[secret.name] = secret.placeholder
        if self:
            _make_undumpable()


def _longest_first(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(value, replacement) pairs, longest value first: a value that holds another is then
    replaced whole, not around the shorter one."""
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)


def _partial_tail(data: bytes, value: bytes) -> int:
    """The length of the longest end of `data` that is a proper start of `value`."""
    i = data.find(value[:1], max(0, len(data) - len(value) + 1))
    while i != -1:
        if value.startswith(data[i:]):
            return len(data) - i
        i = data.find(value[:1], i + 1)
    return 0


def _make_undumpable() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as e:
        logging.getLogger("httpjail").warning(
            "cannot make this process undumpable (%s): a process of the same user could read "
            "the secrets from its memory", e)


class RedactingFilter(logging.Filter):
    """Replaces real values in every log record that passes a handler."""

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._credentials.redact(message)
        if redacted != message or record.exc_info:
            if record.exc_info:
                formatted = logging.Formatter().formatException(record.exc_info)
                redacted += "\n" + self._credentials.redact(formatted)
                record.exc_info = None
                record.exc_text = None
            record.msg, record.args = redacted, None
        return True


def load_credentials(
    secret_specs: Iterable[str],
    file_specs: Iterable[str],
    header_specs: Iterable[str],
    environ: Mapping[str, str],
) -> Credentials:
    """What --secret, --secret-file and --header ask for, with the values read from
    `environ` and the files. Raises ValueError naming the flag."""
    held: list[Secret] = []
    for spec in secret_specs:
        name, hosts = _flagged("--secret", parse_secret, spec)
        value = environ.get(name)
        if value is None:
            raise ValueError(f"--secret {spec}: the environment variable {name} is not set")
        held.append(_flagged("--secret", Secret.make, name, value, hosts, f"the value of {name}"))
    for spec in file_specs:
        name, path, hosts = _flagged("--secret-file", parse_secret_file, spec)
        try:
            value = read_secret_file(path)
        except OSError as e:
            raise ValueError(f"--secret-file {spec}: cannot read {path}: {e.strerror}") from None
        held.append(_flagged("--secret-file", Secret.make, name, value, hosts, f"the content of {path}"))
    names = [secret.name for secret in held]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"--secret / --secret-file: {', '.join(duplicates)} given more than once")
    headers, hidden = [], []
    for spec in header_specs:
        rule = _flagged("--header", parse_header, spec)
        names = _REFERENCE.findall(rule.value)
        for name in names:
            if name not in environ:
                raise ValueError(f"--header {spec}: the environment variable {name} is not set")
            # The value itself never goes into a message.
            _flagged("--header", _check_value, environ[name].strip(), f"the value of {name} in {spec!r}")
        value = _REFERENCE.sub(lambda m: environ[m.group(1)].strip(), rule.value)
        parts = tuple(environ[name].strip() for name in names)
        headers.append(HeaderRule(rule.host, rule.name, value.strip(), parts))
        hidden += names
    return Credentials(tuple(held), tuple(headers), tuple(dict.fromkeys(hidden)))


def _flagged[T](flag: str, parse: Callable[..., T], *args: object) -> T:
    try:
        return parse(*args)
    except ValueError as e:
        raise ValueError(f"{flag}: {e}") from None
