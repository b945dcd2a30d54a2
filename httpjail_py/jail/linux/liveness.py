"""Which strong jails are alive, and the sweep that removes what dead ones left behind.

A jail claims its id before it makes anything: a lock file `/run/httpjail/<id>.lock`,
locked (`flock`) for the life of the httpjail process that owns it. The file is made
under a temporary name, locked, and only then linked to its real name, so a sweeper never
sees a claim that is not yet locked. The owner removes its resources, then the file.

So, for a resource named after an id (netns `httpjail_<id>`, host veth `hj<id>`, nft
table `inet httpjail_<id>`, `/etc/netns/httpjail_<id>`):

- its lock file is locked: its jail is alive (starting, running or stopping); keep it;
- its lock file exists and can be locked: the owner died (SIGKILL); remove it all;
- there is no lock file: the owner died after removing its file, or the host rebooted
  (/run is a tmpfs, /etc/netns is not); remove it all.

Only ids of our own form (`py` and 8 of [a-z0-9]) are ever touched: other tools (coder's
httpjail among them) name their namespaces `httpjail_<id>` too.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import string
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import netns
from pyroute2.iproute import IPRoute

from httpjail_py.jail.linux.netns import (
    NETNS_ETC,
    NETNS_PREFIX,
    delete_link,
    jail_network_exists,
    remove_netns,
    stop_processes_in,
)

__all__ = [
    "RUN_DIR", "Claim", "claim", "host_veth_name", "is_alive", "is_our_id",
    "subnet_lock", "sweep", "sweep_lock",
]

log = logging.getLogger("httpjail.cleanup")

RUN_DIR = Path("/run/httpjail")
HOST_VETH_PREFIX = "hj"
_ID = re.compile(r"py[a-z0-9]{8}")
_ALPHABET = string.ascii_lowercase + string.digits


def is_our_id(jail_id: str) -> bool:
    return bool(_ID.fullmatch(jail_id))


def host_veth_name(jail_id: str) -> str:
    return f"{HOST_VETH_PREFIX}{jail_id}"


def _run_dir() -> Path:
    RUN_DIR.mkdir(mode=0o700, exist_ok=True)
    return RUN_DIR


@dataclass
class Claim:
    """A jail id, held alive by a locked file until `release()`."""

    jail_id: str
    path: Path
    fd: int

    def release(self) -> None:
        """Give up the id. Call it after the jail's resources are gone. Idempotent."""
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = -1


def claim() -> Claim:
    """A new, unused jail id, claimed. Blocking (file system)."""
    directory = _run_dir()
    while True:
        jail_id = "py" + "".join(secrets.choice(_ALPHABET) for _ in range(8))
        temp = directory / f".{jail_id}.{os.getpid()}.tmp"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        final = directory / f"{jail_id}.lock"
        try:
            os.link(temp, final)  # fails if the name exists: never two owners of one id
        except FileExistsError:
            os.close(fd)
            continue
        finally:
            temp.unlink()
        if jail_network_exists(jail_id):  # a leftover of a dead jail: let the sweep have it
            os.close(fd)
            final.unlink()
            continue
        return Claim(jail_id, final, fd)


@contextlib.contextmanager
def _host_lock(name: str) -> Iterator[None]:
    """An exclusive lock, host-wide, on `RUN_DIR/name`, held for the `with` block."""
    fd = os.open(_run_dir() / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def subnet_lock() -> contextlib.AbstractContextManager[None]:
    """Held while a jail picks a free /30 and puts an address of it on its veth."""
    return _host_lock("subnets.lock")


def _dead(jail_id: str) -> int | None:
    """A locked fd of the claim file of a dead jail; -1 when it has no file; None if alive."""
    try:
        fd = os.open(RUN_DIR / f"{jail_id}.lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def is_alive(jail_id: str) -> bool:
    """Whether the jail `jail_id` is held by a running httpjail (its claim is locked)."""
    fd = _dead(jail_id)
    if fd is None:
        return True
    if fd >= 0:
        os.close(fd)
    return False


def _ids_in_use() -> dict[str, list[str]]:
    """Every id of our form named by a resource on this host: id -> what names it."""
    found: dict[str, list[str]] = {}

    def add(jail_id: str, what: str) -> None:
        if is_our_id(jail_id):
            found.setdefault(jail_id, []).append(what)

    for name in netns.listnetns():
        if name.startswith(NETNS_PREFIX):
            add(name.removeprefix(NETNS_PREFIX), f"netns {name}")
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if name.startswith(HOST_VETH_PREFIX):
                add(name.removeprefix(HOST_VETH_PREFIX), f"link {name}")
    for table in _nft_tables():
        add(table.removeprefix(NETNS_PREFIX), f"nft table inet {table}")
    if NETNS_ETC.is_dir():
        for entry in NETNS_ETC.iterdir():
            if entry.name.startswith(NETNS_PREFIX):
                add(entry.name.removeprefix(NETNS_PREFIX), str(entry))
    return found


def _nft_tables() -> list[str]:
    nft = shutil.which("nft")
    if nft is None:
        return []
    out = subprocess.run([nft, "list", "tables", "inet"], capture_output=True, text=True, timeout=30)
    names = [line.split()[-1] for line in out.stdout.splitlines() if line.startswith("table inet ")]
    return [n for n in names if n.startswith(NETNS_PREFIX)]


def remove_resources(jail_id: str) -> None:
    """Remove whatever exists of a jail's resources; what is already gone is skipped.

    What runs in it goes first (its processes, a Docker jail's containers), then its link,
    and the host's filter table last: the other order would leave a moment in which a
    process still running reaches the host unfiltered."""
    name = f"{NETNS_PREFIX}{jail_id}"
    _remove_containers(jail_id)
    # What the dead jail's command left running: nothing serves it any more.
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        stop_processes_in(name, grace=0)
    with contextlib.suppress(Exception):
        delete_link(host_veth_name(jail_id))
    if name in netns.listnetns():
        with contextlib.suppress(subprocess.SubprocessError):
            remove_netns(name)
    nft = shutil.which("nft")
    if nft is not None and name in _nft_tables():
        subprocess.run([nft, "delete", "table", "inet", name], capture_output=True, timeout=30)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
    (RUN_DIR / f"{jail_id}.cid").unlink(missing_ok=True)  # a Docker jail's container id


def _remove_containers(jail_id: str) -> None:
    """A Docker jail's containers (labelled with its id), if Docker is there to ask."""
    docker = shutil.which("docker")
    if docker is None:
        return
    # Imported here: holder.py brings tarfile and more, which a strong jail's start need not load.
    from httpjail_py.jail.docker.holder import LABEL

    label = f"label={LABEL}={jail_id}"
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        found = subprocess.run([docker, "ps", "-aq", "--filter", label], capture_output=True, text=True,
                               timeout=30).stdout.split()
        if found:
            subprocess.run([docker, "rm", "-f", *found], capture_output=True, timeout=60)


def sweep_lock() -> contextlib.AbstractContextManager[None]:
    """Held while sweeping: one sweep at a time, and none while it is held elsewhere."""
    return _host_lock("sweep.lock")


def sweep(first: Callable[[], list[str]] | None = None) -> list[str]:
    """Remove the resources of every dead jail of ours. Returns what was removed. Blocking.

    `first` sweeps what else a dead jail may have left (the Docker jail's containers), in
    the same hold of the lock."""
    with sweep_lock():
        return (first() if first else []) + _sweep()


def _sweep() -> list[str]:
    removed: list[str] = []
    for jail_id, resources in sorted(_ids_in_use().items()):
        fd = _dead(jail_id)
        if fd is None:
            continue
        try:
            log.info("removing what a dead jail left: %s", ", ".join(resources))
            remove_resources(jail_id)
            removed += resources
            if fd >= 0:
                with contextlib.suppress(FileNotFoundError):
                    (RUN_DIR / f"{jail_id}.lock").unlink()
        finally:
            if fd >= 0:
                os.close(fd)
    # Claim files whose jail died before it made anything.
    if RUN_DIR.is_dir():
        for path in RUN_DIR.glob("py*.lock"):
            jail_id = path.name.removesuffix(".lock")
            if is_our_id(jail_id) and (fd := _dead(jail_id)) is not None and fd >= 0:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                os.close(fd)
    return removed
