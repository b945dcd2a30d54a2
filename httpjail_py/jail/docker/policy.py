"""Which `docker run` options a jailed container may have: none that gives it another way
out, the host's namespaces, kernel interfaces, devices, or a container engine's socket
(which starts containers outside the jail).

Allow-lists where the set of safe values is small (capabilities, security options,
namespace modes); refusals by name for the rest. Raises ValueError saying why.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from httpjail_py.jail.docker.holder import LABEL

__all__ = ["check_option"]

_REFUSED = {
    "network": "the container's network is the jail's",
    "net": "the container's network is the jail's",
    "network-alias": "the container's network is the jail's",
    "net-alias": "the container's network is the jail's",
    "dns": "DNS in the jail is httpjail's sinkhole",
    "dns-option": "DNS in the jail is httpjail's sinkhole",
    "dns-opt": "DNS in the jail is httpjail's sinkhole",
    "dns-search": "DNS in the jail is httpjail's sinkhole",
    "add-host": "the container's network is the jail's",
    "publish": "nothing reaches into the jail",
    "publish-all": "nothing reaches into the jail",
    "ip": "the jail's address is httpjail's",
    "ip6": "the jail has no IPv6",
    "link-local-ip": "the jail's address is httpjail's",
    "mac-address": "the jail's link is httpjail's",
    "link": "the container's network is the jail's",
    "hostname": "the jail's network namespace is shared with a holder container, whose host name it keeps",
    "domainname": "the jail's network namespace is shared with a holder container",
    "privileged": "a privileged container can undo the jail",
    "use-api-socket": "the Docker API can start a container outside the jail",
    "detach": "httpjail stays attached, to remove the container when it ends",
    "device": "a host device can reach what the jail keeps out (a disk holds every secret)",
    "device-cgroup-rule": "a host device can reach what the jail keeps out",
    "runtime": "another runtime may not keep the container in its namespaces",
    "annotation": "annotations can change what the runtime does",
    "volumes-from": "another container's volumes may hold a way out",
    "cidfile": "httpjail keeps the container's id itself, to remove exactly that container",
}
# Docker's default capabilities and a few more that reach nothing outside the container.
_ALLOWED_CAPS = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE", "IPC_LOCK", "SYS_NICE", "SYS_RESOURCE",
    "LEASE", "WAKE_ALARM",
})
_NAMESPACE_MODES = frozenset({"", "private", "none", "shareable"})
# Kernel interfaces and the directories of every engine's socket and the named netns.
_KERNEL = (Path("/proc"), Path("/sys"), Path("/dev"))
_SENSITIVE = (Path("/run/docker.sock"), Path("/var/run/docker.sock"), Path("/run/containerd"),
              Path("/run/podman"), Path("/run/netns"), Path("/var/run/netns"), Path("/run/dbus"))


def check_option(name: str, value: str | None) -> None:
    """Raises ValueError when the option `--name [value]` is not allowed in a jail."""
    if name in _REFUSED and not (value in ("false", "0") and name in ("privileged", "detach", "publish-all")):
        raise ValueError(f"docker run option --{name} is not allowed in a jail: {_REFUSED[name]}")
    if value is None:
        return
    if name == "cap-add":
        caps = {cap.strip().upper().removeprefix("CAP_") for cap in value.split(",")}
        if bad := sorted(caps - _ALLOWED_CAPS):
            raise ValueError(f"--cap-add {value} is not allowed in a jail: {', '.join(bad)} could undo it")
    elif name in ("pid", "ipc", "uts", "userns", "cgroupns"):
        if value not in _NAMESPACE_MODES:
            raise ValueError(f"--{name} {value} is not allowed in a jail: it shares a namespace from outside")
    elif name == "security-opt":
        _check_security_opt(value)
    elif name == "sysctl" and value.strip().startswith("net."):
        raise ValueError(f"--sysctl {value} is not allowed in a jail: its network settings are httpjail's")
    elif name == "label" and value.split("=", 1)[0].strip() == LABEL:
        raise ValueError(f"--label {LABEL} is httpjail's own")
    elif name == "volume":
        # A host path starts like a path; anything else names a volume.
        host_path = value.startswith(("/", ".", "~"))
        _check_sources(f"--volume {value}", [value.split(":", 1)[0]] if host_path else [])
    elif name == "mount":
        _check_mount(value)


def _check_security_opt(value: str) -> None:
    key, _, setting = value.replace("=", ":", 1).partition(":")
    ok = (key == "no-new-privileges"
          or (key in ("apparmor", "seccomp") and setting not in ("", "unconfined"))
          or (key == "label" and setting.split(":", 1)[0] in ("user", "role", "type", "level")))
    if not ok:
        raise ValueError(
            f"--security-opt {value} is not allowed in a jail: it loosens the container's confinement"
        )


def _check_mount(value: str) -> None:
    fields: dict[str, str] = {}
    for part in value.split(","):
        key, _, setting = part.partition("=")
        fields[key.strip()] = setting
    kind = fields.get("type", "volume")
    if kind == "volume" and any(k.startswith("volume-opt") and ("device=" in v or "bind" in v)
                                for k, v in fields.items()):
        raise ValueError(
            f"--mount {value} is not allowed in a jail: a volume over a host path is a bind mount"
        )
    if kind == "bind":
        _check_sources(f"--mount {value}", [fields.get("source") or fields.get("src") or ""])


def _check_sources(option: str, sources: Iterable[str]) -> None:
    for source in sources:
        real = Path(os.path.realpath(os.path.expanduser(source)))
        why = _why_refused(real)
        if why:
            raise ValueError(f"{option} is not allowed in a jail: {real} {why}")


def _engine_sockets() -> list[Path]:
    paths = list(_SENSITIVE)
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        paths.append(Path(host.removeprefix("unix://")))
    return paths


def _why_refused(real: Path) -> str | None:
    if real == Path("/"):
        return "holds every host socket and device"
    if any(real == k or k in real.parents for k in _KERNEL):
        return "is a kernel interface of the host"
    for sensitive in _engine_sockets():
        target = Path(os.path.realpath(sensitive))
        if real == target or real in target.parents:
            return (f"is or holds {sensitive}: a container engine's socket or the host's named "
                    "namespaces start containers or enter namespaces outside the jail")
    try:
        if stat.S_ISSOCK(real.stat().st_mode):
            return "is a socket of a host service"
    except OSError:
        pass
    return None
