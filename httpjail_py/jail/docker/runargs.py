"""What follows `--docker-run`: `[docker run options] IMAGE [CMD...]`, split and checked.

The image is the first argument that is neither an option nor an option's value, so the
options that take a value must be known: they are listed here (docker 28's `docker run`).
An option we do not know is refused unless written `--option=value` (when it is not
known, whether the next argument is its value cannot be told, and guessing wrong would
run the wrong image).

What a jailed container may not have is policy.py's to say; each option is checked there.
After `--`, the next argument is the image, and it may not look like an option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from httpjail_py.jail.docker.policy import check_option

__all__ = ["DockerRun", "parse_docker_run"]

# Options of `docker run` that take a value (long names; the short ones below).
_WITH_VALUE = frozenset("""
add-host annotation attach blkio-weight blkio-weight-device cap-add cap-drop cgroup-parent
cgroupns cidfile cpu-count cpu-percent cpu-period cpu-quota cpu-rt-period cpu-rt-runtime
cpu-shares cpus cpuset-cpus cpuset-mems detach-keys device device-cgroup-rule
device-read-bps device-read-iops device-write-bps device-write-iops dns dns-option
dns-search domainname entrypoint env env-file expose gpus group-add health-cmd
health-interval health-retries health-start-interval health-start-period health-timeout
hostname ip ip6 ipc isolation kernel-memory label label-file link link-local-ip log-driver
log-opt mac-address memory memory-reservation memory-swap memory-swappiness mount name
network net network-alias net-alias oom-score-adj pid pids-limit platform publish pull
restart runtime security-opt shm-size stop-signal stop-timeout storage-opt sysctl tmpfs
ulimit user userns uts volume volume-driver volumes-from workdir
""".split())
_FLAGS = frozenset("""
detach disable-content-trust help init interactive no-healthcheck oom-kill-disable
privileged publish-all quiet read-only rm sig-proxy tty use-api-socket
""".split())
_SHORT = {"a": "attach", "c": "cpu-shares", "e": "env", "h": "hostname", "l": "label", "m": "memory",
          "p": "publish", "u": "user", "v": "volume", "w": "workdir",
          "d": "detach", "i": "interactive", "t": "tty", "P": "publish-all", "q": "quiet"}

@dataclass(frozen=True)
class DockerRun:
    options: tuple[str, ...]  # as given, for `docker run`
    image: str
    command: tuple[str, ...]
    parsed: tuple[tuple[str, str | None], ...] = ()  # (long name, value or None) per option

    def values(self, name: str) -> list[str]:
        """The values given to the long option `name`, however it was spelled."""
        return [value for option, value in self.parsed if option == name and value is not None]

    def has(self, name: str) -> bool:
        return any(option == name and value in (None, "true", "1") for option, value in self.parsed)


def _read_option(args: Sequence[str], i: int) -> tuple[int, list[tuple[str, str | None]]]:
    """The option at args[i]: (how many arguments it takes up, its (name, value) pairs).
    Raises ValueError."""
    arg = args[i]
    if arg.startswith("--"):
        name, eq, value = arg[2:].partition("=")
        if eq:
            return 1, [(name, value)]
        if name in _FLAGS:
            return 1, [(name, None)]
        if name not in _WITH_VALUE:
            raise ValueError(
                f"unknown docker run option --{name}: write it as --{name}=VALUE if it takes a value"
            )
        if i + 1 >= len(args):
            raise ValueError(f"docker run option --{name} needs a value")
        return 2, [(name, args[i + 1])]
    pairs: list[tuple[str, str | None]] = []
    for j, letter in enumerate(arg[1:], start=1):  # a group such as -it, or -e X / -eX
        long = _SHORT.get(letter)
        if long is None:
            raise ValueError(f"unknown docker run option -{letter} (in {arg})")
        if long not in _WITH_VALUE:
            pairs.append((long, None))
            continue
        if j + 1 < len(arg):
            return 1, [*pairs, (long, arg[j + 1:].removeprefix("="))]
        if i + 1 >= len(args):
            raise ValueError(f"docker run option -{letter} needs a value")
        return 2, [*pairs, (long, args[i + 1])]
    return 1, pairs


def parse_docker_run(args: Sequence[str]) -> DockerRun:
    """Split `[options] IMAGE [CMD...]`. Raises ValueError for what is refused (module doc)."""
    i = 0
    parsed: list[tuple[str, str | None]] = []
    while i < len(args) and args[i].startswith("-") and args[i] not in ("-", "--"):
        taken, pairs = _read_option(args, i)
        parsed += pairs
        i += taken
    options = tuple(args[:i])
    if i < len(args) and args[i] == "--":
        i += 1
    if i >= len(args):
        raise ValueError("no image given: --docker-run -- [docker run options] IMAGE [COMMAND...]")
    run = DockerRun(options, args[i], tuple(args[i + 1:]), tuple(parsed))
    _check(run)
    return run


def _check(run: DockerRun) -> None:
    if run.image.startswith("-"):
        raise ValueError(f"{run.image!r} is not an image: an option cannot follow `--`")
    for name, value in run.parsed:
        check_option(name, value)
