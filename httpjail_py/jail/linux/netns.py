"""The network plumbing of one strong-mode jail, made and taken back with pyroute2.

`create_jail_network(spec, undo)` makes, in this order, pushing an undo step onto `undo`
right after each resource exists (so a failure half way leaves exactly the steps to take
back what was made; the caller runs `undo.run()`):

1. the netns `httpjail_<jail_id>`;
2. a veth pair, host end `spec.host_veth`, jail end `hjj<jail_id>`, the jail end moved
   into the netns;
3. IPv6 disabled on both ends (and on `all`, `default` and `lo` inside the netns), before
   any link is up, so not even a router solicitation leaves;
4. `spec.host_addr` on the host end, `spec.jail_addr` on the jail end, both ends and the
   jail's `lo` up, a default route in the jail via `spec.host_addr`;
5. `/etc/netns/httpjail_<jail_id>/resolv.conf` with `nameserver <host_addr>` (what
   `ip netns exec` bind-mounts over /etc/resolv.conf);
6. last, unless `stop_leftovers` is false (a Docker jail's processes go with its
   containers), an undo step (so it runs first) that stops every process still in the
   netns.

Addresses and routes are not undo steps of their own: they go with their links, and the
jail end goes with the netns. Nothing here touches nftables (see `nft.py`) or sends a
packet. Blocking (netlink, `ip netns exec`): run it at setup, never on the proxy's loop.

Nothing here forks the (multi-threaded) httpjail process: pyroute2's own netns helpers
do, so the namespace is made with `ip netns add`, and the netlink socket inside it is
opened by a thread of its own that joins the namespace (`setns` is per thread).

Example::

    undo = UndoStack()
    host, jail = allocate_subnet()
    spec = JailNetSpec(jail_id="a1b2c3", host_veth="hj-a1b2c3", host_addr=host,
                       jail_addr=jail, proxy_port=8443, dns_port=5353)
    try:
        create_jail_network(spec, undo)
        ...   # nft rules, the proxy, the jailed child
    finally:
        undo.run()
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Collection
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from pyroute2 import netns
from pyroute2.iproute import IPRoute

from httpjail_py.config import JAIL_POOL
from httpjail_py.jail.cleanup import UndoStack
from httpjail_py.jail.linux.nft import JailNetSpec
from httpjail_py.jail.signals import block_in_this_thread

__all__ = [
    "DEFAULT_POOL",
    "add_netns",
    "stop_processes_in",
    "NETNS_ETC",
    "NETNS_PREFIX",
    "allocate_subnet",
    "attach_netns",
    "create_jail_network",
    "delete_link",
    "jail_ifname",
    "jail_network_exists",
    "netns_name",
    "remove_netns",
]

NETNS_PREFIX = "httpjail_"
JAIL_IF_PREFIX = "hjj"
NETNS_ETC = Path("/etc/netns")
DEFAULT_POOL = JAIL_POOL


def netns_name(jail_id: str) -> str:
    """The jail's network namespace: `httpjail_<jail_id>`."""
    return f"{NETNS_PREFIX}{jail_id}"


def jail_ifname(jail_id: str) -> str:
    """The jail end of the veth pair: `hjj<jail_id>` (at most 15 characters)."""
    return f"{JAIL_IF_PREFIX}{jail_id}"


def jail_network_exists(jail_id: str) -> bool:
    """Whether the jail's netns exists (its veth and addresses live and die with it)."""
    return netns_name(jail_id) in netns.listnetns()


def allocate_subnet(
    pool: IPv4Network = DEFAULT_POOL, taken: Collection[IPv4Network] = ()
) -> tuple[IPv4Interface, IPv4Interface]:
    """A free /30 of `pool` as (host end, jail end), e.g. 10.200.0.1/30, 10.200.0.2/30.

    Free means: overlapping no network in `taken` and no IPv4 address (with its prefix)
    configured on the host right now. Raises `RuntimeError` when the pool has none left.
    """
    if pool.prefixlen > 30:
        raise ValueError(f"pool {pool} is smaller than a /30")
    used = [IPv4Network(n, strict=False) for n in taken]
    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET):
            address = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
            if address:
                used.append(IPv4Interface(f"{address}/{msg['prefixlen']}").network)
    for subnet in pool.subnets(new_prefix=30):
        if not any(subnet.overlaps(u) for u in used):
            host, jail = subnet[1], subnet[2]
            return IPv4Interface(f"{host}/30"), IPv4Interface(f"{jail}/30")
    raise RuntimeError(f"no free /30 left in {pool}")


def delete_link(ifname: str) -> None:
    """Delete the link `ifname` if it exists."""
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=ifname):
            ipr.link("del", index=index)


def remove_netns(name: str) -> None:
    """Delete the netns `name` if it exists."""
    if name in netns.listnetns():
        subprocess.run(["ip", "netns", "delete", name], check=True, capture_output=True, timeout=30)


def stop_processes_in(name: str, grace: float = 1.0) -> None:
    """Stop every process still in the netns `name`: SIGTERM once, SIGKILL to what is
    left after `grace` seconds. A command's daemon leaves its process group (Codex's TUI
    starts one) but cannot leave the namespace: this is how it ends with the jail.

    Each signal goes through a pidfd, to a process checked to be in the namespace: a pid
    that was listed, then freed and reused by another process, is never signalled.
    Raises OSError when processes outlive SIGKILL by 5 s (stuck in the kernel)."""
    termed: set[int] = set()
    deadline = time.monotonic() + grace
    while pids := _pids_in(name):
        now = time.monotonic()
        if now > deadline + 5:
            raise OSError(f"processes {pids} in {name} did not stop")
        for pid in pids:
            if now > deadline:
                _signal_if_in(name, pid, signal.SIGKILL)
            elif pid not in termed:
                termed.add(pid)
                _signal_if_in(name, pid, signal.SIGTERM)
        time.sleep(0.05)


def _signal_if_in(name: str, pid: int, sig: int) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ours, theirs = os.stat(f"/run/netns/{name}"), os.stat(f"/proc/{pid}/ns/net")
        if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino):
            signal.pidfd_send_signal(pidfd, sig)
    except (FileNotFoundError, ProcessLookupError):
        pass  # it is gone (or the namespace is)
    finally:
        os.close(pidfd)


def _pids_in(name: str) -> list[int]:
    if name not in netns.listnetns():
        return []
    result = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()]


def add_netns(name: str) -> None:
    result = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise OSError(f"ip netns add {name}: {result.stderr.strip()}")


def in_netns(name: str, fn: Callable[[], None]) -> None:
    """Run `fn` in a new thread that has joined the netns `name`; raise what it raised.

    A thread of its own, because it never leaves the namespace: a pooled thread that did
    would run later work in the jail.
    """
    errors: list[BaseException] = []

    def body() -> None:
        try:
            block_in_this_thread()
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.setns(fd, os.CLONE_NEWNET)
            finally:
                os.close(fd)
            fn()
        except BaseException as e:  # handed to the caller's thread
            errors.append(e)

    thread = threading.Thread(target=body, name=f"netns {name}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def attach_netns(name: str, pid: int) -> None:
    """Name the network namespace of process `pid` `name` (the Docker jail's holder's)."""
    result = subprocess.run(["ip", "netns", "attach", name, str(pid)], capture_output=True, text=True,
                            timeout=30)
    if result.returncode != 0:
        raise OSError(f"ip netns attach {name} {pid}: {result.stderr.strip()}")


def create_jail_network(
    spec: JailNetSpec, undo: UndoStack, make_netns: Callable[[str], None] = add_netns,
    stop_leftovers: bool = True,
) -> None:
    """Make the jail's netns (with `make_netns(name)`), veth pair, addresses, route and
    resolv.conf (module doc).

    On any error it raises with the undo steps of what it made already pushed; the caller
    runs `undo.run()`. A resource that existed before (a link named `spec.host_veth`, the
    netns) makes it fail before it would ever register an undo step for it.
    """
    ns = netns_name(spec.jail_id)
    jail_if = jail_ifname(spec.jail_id)
    host_ip, host_len = str(spec.host_addr.ip), spec.host_addr.network.prefixlen
    jail_ip, jail_len = str(spec.jail_addr.ip), spec.jail_addr.network.prefixlen

    if ns in netns.listnetns():
        raise FileExistsError(f"network namespace {ns} already exists")
    make_netns(ns)
    # For an attached namespace this removes the name; the namespace goes with its owner.
    undo.push(f"remove netns {ns}", lambda: remove_netns(ns))

    with IPRoute() as ipr:
        for name in (spec.host_veth, jail_if):
            if ipr.link_lookup(ifname=name):
                raise FileExistsError(f"a link named {name} already exists on the host")
        ipr.link("add", ifname=spec.host_veth, kind="veth", peer={"ifname": jail_if})
        undo.push(f"delete veth {spec.host_veth}", lambda: delete_link(spec.host_veth))
        [host_idx] = ipr.link_lookup(ifname=spec.host_veth)
        [jail_idx] = ipr.link_lookup(ifname=jail_if)
        ipr.link("set", index=jail_idx, net_ns_fd=ns)
        Path(f"/proc/sys/net/ipv6/conf/{spec.host_veth}/disable_ipv6").write_text("1\n")
        ipr.addr("add", index=host_idx, address=host_ip, prefixlen=host_len)
        ipr.link("set", index=host_idx, state="up")

    def configure_jail_end() -> None:
        # /proc/sys/net is the namespace of the thread that opens it: this one's.
        for ifname in ("all", "default", "lo", jail_if):
            Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1\n")
        with IPRoute() as jpr:
            [lo_idx] = jpr.link_lookup(ifname="lo")
            [jail_idx] = jpr.link_lookup(ifname=jail_if)
            jpr.addr("add", index=jail_idx, address=jail_ip, prefixlen=jail_len)
            jpr.link("set", index=lo_idx, state="up")
            jpr.link("set", index=jail_idx, state="up")
            jpr.route("add", dst="0.0.0.0/0", gateway=host_ip, oif=jail_idx)

    in_netns(ns, configure_jail_end)

    # /etc/netns itself is iproute2's, shared by every netns: made if missing, left.
    NETNS_ETC.mkdir(parents=True, exist_ok=True)
    etc = NETNS_ETC / ns
    etc.mkdir(exist_ok=False)
    undo.push(f"remove {etc}", lambda: shutil.rmtree(etc, ignore_errors=False))
    (etc / "resolv.conf").write_text(f"nameserver {host_ip}\n")
    if stop_leftovers:
        # Pushed last, so it runs first: what still runs in the jail stops before its network goes.
        undo.push(f"stop the processes left in {ns}", lambda: stop_processes_in(ns))
