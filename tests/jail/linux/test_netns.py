"""The strong jail's network plumbing, made for real and taken back (as root).

Every test makes its resources under a fresh random jail id and takes them back in a
`finally`, even when an assertion fails: first the UndoStack, then, as a safety net, by
name. The only packets sent go between a jail and its own host veth end.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from httpjail_py.jail.cleanup import UndoStack
from httpjail_py.jail.linux.netns import (
    NETNS_ETC,
    allocate_subnet,
    create_jail_network,
    jail_ifname,
    jail_network_exists,
    netns_name,
)
from httpjail_py.jail.linux.nft import JailNetSpec


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


def _in_jail(jail_id: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("ip", "netns", "exec", netns_name(jail_id), *argv, check=check)


def _netns_list() -> list[str]:
    return [line.split()[0] for line in _run("ip", "netns", "list").stdout.splitlines() if line.strip()]


def _link_exists(ifname: str) -> bool:
    return _run("ip", "link", "show", "dev", ifname, check=False).returncode == 0


def _new_spec(taken: set[IPv4Network] | None = None) -> JailNetSpec:
    jail_id = secrets.token_hex(4)
    # A random /24 of the default pool: pytest-xdist workers allocating at the same moment
    # would otherwise both get the first free /30 before either has configured it.
    pool = IPv4Network(f"10.200.{secrets.randbelow(256)}.0/24")
    host, jail = allocate_subnet(pool, taken=taken or set())
    return JailNetSpec(
        jail_id=jail_id,
        host_veth=f"hjh{jail_id}",
        host_addr=host,
        jail_addr=jail,
        proxy_port=8443,
        dns_port=5353,
    )


def _force_cleanup(spec: JailNetSpec) -> None:
    """The safety net behind UndoStack: whatever is left under this jail's names."""
    ns = netns_name(spec.jail_id)
    if ns in _netns_list():
        _run("ip", "netns", "delete", ns, check=False)
    if _link_exists(spec.host_veth):
        _run("ip", "link", "delete", "dev", spec.host_veth, check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


@contextmanager
def _jail(spec: JailNetSpec) -> Iterator[UndoStack]:
    undo = UndoStack()
    try:
        create_jail_network(spec, undo)
        yield undo
    finally:
        undo.run()
        _force_cleanup(spec)


def _assert_gone(spec: JailNetSpec) -> None:
    ns = netns_name(spec.jail_id)
    assert ns not in _netns_list()
    assert not jail_network_exists(spec.jail_id)
    assert not _link_exists(spec.host_veth)
    assert not _link_exists(jail_ifname(spec.jail_id))
    assert not (NETNS_ETC / ns).exists()


def _tcp_reaches_host_end(spec: JailNetSpec) -> None:
    """Connect from inside the jail to a listener of ours on the host end of its veth."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((str(spec.host_addr.ip), 0))
        listener.listen(1)
        listener.settimeout(10)
        port = listener.getsockname()[1]
        code = (
            "import socket, sys; "
            "socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()"
        )
        _in_jail(spec.jail_id, sys.executable, "-c", code, str(spec.host_addr.ip), str(port))
        conn, (peer, _) = listener.accept()
        conn.close()
    assert peer == str(spec.jail_addr.ip)


def _check_jail(spec: JailNetSpec) -> None:
    ns = netns_name(spec.jail_id)
    jail_if = jail_ifname(spec.jail_id)
    assert ns in _netns_list()
    assert jail_network_exists(spec.jail_id)
    assert str(spec.host_addr) in _run("ip", "-4", "addr", "show", "dev", spec.host_veth).stdout
    assert not _link_exists(jail_if), "the jail end must not stay in the host netns"

    assert str(spec.jail_addr) in _in_jail(spec.jail_id, "ip", "-4", "addr", "show", "dev", jail_if).stdout
    assert "state UP" in _in_jail(spec.jail_id, "ip", "link", "show", "dev", jail_if).stdout
    assert "UP" in _in_jail(spec.jail_id, "ip", "link", "show", "dev", "lo").stdout
    routes = _in_jail(spec.jail_id, "ip", "-4", "route").stdout
    assert f"default via {spec.host_addr.ip} dev {jail_if}" in routes

    assert _in_jail(spec.jail_id, "cat", f"/proc/sys/net/ipv6/conf/{jail_if}/disable_ipv6").stdout == "1\n"
    assert _in_jail(spec.jail_id, "cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6").stdout == "1\n"
    assert Path(f"/proc/sys/net/ipv6/conf/{spec.host_veth}/disable_ipv6").read_text() == "1\n"
    assert "inet6" not in _in_jail(spec.jail_id, "ip", "addr").stdout

    resolv = NETNS_ETC / ns / "resolv.conf"
    assert resolv.read_text() == f"nameserver {spec.host_addr.ip}\n"
    assert _in_jail(spec.jail_id, "cat", "/etc/resolv.conf").stdout == f"nameserver {spec.host_addr.ip}\n"

    if shutil.which("ping"):
        _in_jail(spec.jail_id, "ping", "-c1", "-W1", str(spec.host_addr.ip))
    _tcp_reaches_host_end(spec)


@pytest.mark.root
@pytest.mark.netns
def test_create_then_undo_leaves_nothing() -> None:
    spec = _new_spec()
    with _jail(spec) as undo:
        _check_jail(spec)
        undo.run()
        _assert_gone(spec)


@pytest.mark.root
@pytest.mark.netns
def test_existing_host_veth_fails_and_undo_leaves_only_what_was_there() -> None:
    spec = _new_spec()
    # A veth pair, not a dummy link: this kernel has no dummy module.
    peer = f"hjp{spec.jail_id}"
    _run("ip", "link", "add", spec.host_veth, "type", "veth", "peer", "name", peer)
    undo = UndoStack()
    try:
        with pytest.raises(FileExistsError, match=spec.host_veth):
            create_jail_network(spec, undo)
        undo.run()
        assert netns_name(spec.jail_id) not in _netns_list()
        assert not (NETNS_ETC / netns_name(spec.jail_id)).exists()
        assert _link_exists(spec.host_veth) and _link_exists(peer), (
            "the link that was there before is not ours to delete"
        )
    finally:
        undo.run()
        _force_cleanup(spec)  # also deletes the pre-existing pair
    _assert_gone(spec)
    assert not _link_exists(peer)


@pytest.mark.root
@pytest.mark.netns
def test_late_failure_undoes_netns_and_veth() -> None:
    """The last step fails (its /etc/netns directory is in the way): all before it goes."""
    spec = _new_spec()
    in_the_way = NETNS_ETC / netns_name(spec.jail_id)
    etc_existed = NETNS_ETC.exists()
    in_the_way.mkdir(parents=True)
    undo = UndoStack()
    try:
        with pytest.raises(FileExistsError):
            create_jail_network(spec, undo)
        assert jail_network_exists(spec.jail_id) and _link_exists(spec.host_veth)
        undo.run()
        assert netns_name(spec.jail_id) not in _netns_list()
        assert not _link_exists(spec.host_veth)
        assert in_the_way.is_dir(), "the directory that was there before is not ours to delete"
    finally:
        undo.run()
        _force_cleanup(spec)
        if not etc_existed:
            # Only if empty: other jails (pytest-xdist workers) may have theirs there.
            with contextlib.suppress(OSError):
                NETNS_ETC.rmdir()
    _assert_gone(spec)


@pytest.mark.root
@pytest.mark.netns
def test_two_jails_at_once_get_different_subnets() -> None:
    first = _new_spec()
    with _jail(first) as undo_first:
        # The first jail's host end is configured now: it is skipped even when not "taken".
        assert allocate_subnet()[0].network != first.host_addr.network
        second = _new_spec(taken={first.host_addr.network})
        assert second.host_addr.network != first.host_addr.network
        with _jail(second) as undo_second:
            _check_jail(first)
            _check_jail(second)
            undo_first.run()
            _assert_gone(first)
            _check_jail(second)
            undo_second.run()
            _assert_gone(second)


def test_allocate_subnet_skips_taken() -> None:
    pool = IPv4Network("10.213.7.0/28")
    host, jail = allocate_subnet(pool, taken={IPv4Network("10.213.7.0/30"), IPv4Network("10.213.7.4/30")})
    assert (host, jail) == (IPv4Interface("10.213.7.9/30"), IPv4Interface("10.213.7.10/30"))


def test_allocate_subnet_skips_networks_overlapping_taken() -> None:
    pool = IPv4Network("10.213.7.0/28")
    host, _ = allocate_subnet(pool, taken={IPv4Network("10.213.7.0/29")})
    assert host == IPv4Interface("10.213.7.9/30")


def test_allocate_subnet_skips_addresses_on_the_host() -> None:
    # 127.0.0.1/8 is on lo everywhere.
    with pytest.raises(RuntimeError, match="no free /30"):
        allocate_subnet(IPv4Network("127.0.0.0/29"))


def test_allocate_subnet_exhausted() -> None:
    pool = IPv4Network("10.213.7.0/29")
    with pytest.raises(RuntimeError, match="no free /30"):
        allocate_subnet(pool, taken={pool})
