"""The strong jail's nftables rules, tested as text (STYLE.md): golden strings, a table of
specs that must be refused, and, as root, the kernel's own verdict on the text.

No test here applies a rule to the host's ruleset: `nft -c` only checks, and the rules
that are really loaded go into a network namespace the test makes and deletes.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from httpjail_py.jail.linux.nft import (
    JAIL_TABLE,
    JailNetSpec,
    render_delete,
    render_host_ruleset,
    render_jail_ruleset,
    table_name,
)

SPEC = JailNetSpec(
    jail_id="a1b2c3",
    host_veth="hj-a1b2c3",
    host_addr=IPv4Interface("10.200.0.1/30"),
    jail_addr=IPv4Interface("10.200.0.2/30"),
    proxy_port=8443,
    dns_port=5353,
)

HOST_RULESET = """\
create table inet httpjail_a1b2c3
table inet httpjail_a1b2c3 {
	chain prerouting {
		type nat hook prerouting priority dstnat - 1; policy accept;
		iifname "hj-a1b2c3" tcp dport 53 dnat ip to 10.200.0.1:5353
		iifname "hj-a1b2c3" udp dport 53 dnat ip to 10.200.0.1:5353
		iifname "hj-a1b2c3" meta l4proto tcp dnat ip to 10.200.0.1:8443
	}

	chain input {
		type filter hook input priority filter - 1; policy accept;
		iifname "hj-a1b2c3" meta nfproto ipv6 counter drop
		iifname "hj-a1b2c3" ct state established,related accept
		iifname "hj-a1b2c3" ip saddr 10.200.0.2 ip daddr 10.200.0.1 tcp dport 8443 accept
		iifname "hj-a1b2c3" ip saddr 10.200.0.2 ip daddr 10.200.0.1 tcp dport 5353 accept
		iifname "hj-a1b2c3" ip saddr 10.200.0.2 ip daddr 10.200.0.1 udp dport 5353 accept
		iifname "hj-a1b2c3" counter drop
	}

	chain forward {
		type filter hook forward priority filter - 1; policy accept;
		iifname "hj-a1b2c3" meta nfproto ipv6 counter drop
		iifname "hj-a1b2c3" counter drop
		oifname "hj-a1b2c3" counter drop
	}
}
"""

JAIL_RULESET = """\
create table inet httpjail_jail
table inet httpjail_jail {
	chain output {
		type filter hook output priority filter; policy drop;
		oifname "lo" accept
		meta nfproto ipv6 counter drop
		meta l4proto icmp counter drop
		ct state established,related accept
		ip saddr 10.200.0.2 ip daddr 10.200.0.1 udp dport 53 accept
		ip saddr 10.200.0.2 ip daddr 10.200.0.1 tcp dport 53 accept
		ip saddr 10.200.0.2 meta l4proto tcp accept
		counter drop
	}
}
"""


def spec(**changes: Any) -> JailNetSpec:
    return dataclasses.replace(SPEC, **changes)


def test_host_ruleset_golden() -> None:
    assert render_host_ruleset(SPEC) == HOST_RULESET


def test_jail_ruleset_golden() -> None:
    assert render_jail_ruleset(SPEC) == JAIL_RULESET


def test_delete_golden() -> None:
    assert render_delete(SPEC) == "delete table inet httpjail_a1b2c3\n"


def test_table_name() -> None:
    assert table_name(SPEC) == "httpjail_a1b2c3"


def test_other_addresses_and_ports_land_in_every_rule() -> None:
    other = spec(
        host_veth="veth.7_x",
        host_addr=IPv4Interface("172.31.255.254/30"),
        jail_addr=IPv4Interface("172.31.255.253/30"),
        proxy_port=65535,
        dns_port=1,
    )
    text = render_host_ruleset(other)
    assert 'iifname "veth.7_x" meta l4proto tcp dnat ip to 172.31.255.254:65535' in text
    assert 'iifname "veth.7_x" udp dport 53 dnat ip to 172.31.255.254:1' in text
    assert "ip saddr 172.31.255.253 ip daddr 172.31.255.254 tcp dport 65535 accept" in text
    assert 'oifname "veth.7_x" counter drop' in text
    assert "hj-a1b2c3" not in text and "10.200" not in text
    assert "ip saddr 172.31.255.253 ip daddr 172.31.255.254 udp dport 53 accept" in render_jail_ruleset(other)


def test_the_forward_proxy_port_is_reached_without_dnat() -> None:
    text = render_host_ruleset(spec(http_proxy_port=3128))
    prerouting = text.split("chain prerouting {")[1].split("}")[0].strip().splitlines()
    # First, so that the catch-all TCP DNAT below never sees it.
    assert prerouting[1].strip() == 'iifname "hj-a1b2c3" ip daddr 10.200.0.1 tcp dport 3128 accept'
    assert "ip saddr 10.200.0.2 ip daddr 10.200.0.1 tcp dport 3128 accept" in text
    assert "3128" not in render_host_ruleset(SPEC)


def test_several_jails_get_distinct_tables() -> None:
    specs = [
        spec(jail_id=jail_id, host_veth=f"hj-{jail_id}")
        for jail_id in ("a1b2c3", "a1b2c4", "0", "zzzzzzzzzzzz")
    ]
    names = [table_name(s) for s in specs]
    assert len(set(names)) == len(names)
    for s, name in zip(specs, names, strict=True):
        assert render_host_ruleset(s).startswith(f"create table inet {name}\ntable inet {name} {{\n")
        assert render_delete(s) == f"delete table inet {name}\n"
    # Inside each jail's own netns the second layer has one fixed name.
    assert {render_jail_ruleset(s).splitlines()[0] for s in specs} == {f"create table inet {JAIL_TABLE}"}


NET = IPv4Interface


@pytest.mark.parametrize(
    "changes, message",
    [
        # jail ids: the table name is built from them.
        ({"jail_id": ""}, "jail_id"),
        ({"jail_id": "A1b2c3"}, "jail_id"),
        ({"jail_id": "a" * 13}, "jail_id"),
        ({"jail_id": "a1-b2"}, "jail_id"),
        ({"jail_id": "a1\n"}, "jail_id"),
        ({"jail_id": 123}, "jail_id"),
        # veth names: quoted into every rule, so nothing may break out of the quotes.
        ({"host_veth": ""}, "host_veth"),
        ({"host_veth": "a" * 16}, "host_veth"),
        ({"host_veth": "hj a1"}, "host_veth"),
        ({"host_veth": 'hj"a1'}, "host_veth"),
        ({"host_veth": "hj'a1"}, "host_veth"),
        ({"host_veth": "hj;a1"}, "host_veth"),
        ({"host_veth": 'x" accept; iifname "y'}, "host_veth"),
        ({"host_veth": "hj\na1"}, "host_veth"),
        ({"host_veth": "hj-a1\n"}, "host_veth"),
        ({"host_veth": "hj\\a1"}, "host_veth"),
        ({"host_veth": "hj*"}, "host_veth"),
        ({"host_veth": "hj/a1"}, "host_veth"),
        ({"host_veth": "hj{a1}"}, "host_veth"),
        ({"host_veth": "vèth0"}, "host_veth"),
        ({"host_veth": "."}, "host_veth"),
        ({"host_veth": ".."}, "host_veth"),
        ({"host_veth": None}, "host_veth"),
        # addresses: IPv4, one /30, its two host addresses.
        ({"host_addr": NET("10.200.0.1/24")}, "/30"),
        ({"jail_addr": NET("10.200.0.2/31")}, "/30"),
        ({"host_addr": "10.200.0.1/30"}, "IPv4Interface"),
        ({"host_addr": NET("10.200.0.0/30")}, "network or broadcast"),
        ({"jail_addr": NET("10.200.0.3/30")}, "network or broadcast"),
        ({"jail_addr": NET("10.200.0.6/30")}, "same /30"),
        ({"jail_addr": NET("10.200.0.1/30")}, "must differ"),
        ({"host_addr": NET("127.0.0.1/30"), "jail_addr": NET("127.0.0.2/30")}, "loopback"),
        ({"host_addr": NET("169.254.0.1/30"), "jail_addr": NET("169.254.0.2/30")}, "link-local"),
        # ports
        ({"proxy_port": 0}, "proxy_port"),
        ({"proxy_port": 65536}, "proxy_port"),
        ({"proxy_port": -1}, "proxy_port"),
        ({"proxy_port": "8443"}, "proxy_port"),
        ({"proxy_port": True}, "proxy_port"),
        ({"dns_port": 0}, "dns_port"),
        ({"dns_port": 70000}, "dns_port"),
        ({"dns_port": 8443}, "must differ"),
        ({"http_proxy_port": 0}, "http_proxy_port"),
        ({"http_proxy_port": "3128"}, "http_proxy_port"),
        ({"http_proxy_port": 5353}, "must differ"),
        ({"http_proxy_port": 8443}, "must differ"),
    ],
    ids=repr,
)
def test_invalid_spec_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**changes)


def test_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPEC.host_veth = 'x" accept'  # type: ignore[misc]


# --- the kernel's verdict (root) ----------------------------------------------------------

NFT = shutil.which("nft")
IP = shutil.which("ip")
needs_nft = pytest.mark.skipif(NFT is None, reason="needs the nft command (apt-get install nftables)")
needs_ip = pytest.mark.skipif(IP is None, reason="needs the ip command (apt-get install iproute2)")

# Valid but odd specs: the kernel must accept whatever the validator lets through.
ODD_SPECS = [
    SPEC,
    spec(host_veth="a" * 15, proxy_port=1, dns_port=65535),
    spec(host_veth="-x.y_Z9", host_addr=NET("192.168.7.6/30"), jail_addr=NET("192.168.7.5/30")),
    spec(host_veth="0"),
    spec(http_proxy_port=3128),
]


def _nft(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = [str(IP), "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, str(NFT), *args], capture_output=True, text=True, timeout=10)


@pytest.mark.root
@needs_nft
@pytest.mark.parametrize("jail_spec", ODD_SPECS, ids=lambda s: s.host_veth)
def test_kernel_accepts_the_rulesets(jail_spec: JailNetSpec, tmp_path: Path) -> None:
    # A fresh id, so that no table on this host can make `create table` fail.
    jail_spec = dataclasses.replace(jail_spec, jail_id=secrets.token_hex(6))
    for name, text in (("host", render_host_ruleset(jail_spec)), ("jail", render_jail_ruleset(jail_spec))):
        path = tmp_path / f"{name}.nft"
        path.write_text(text)
        # -c: parse, then validate against the kernel in a transaction that is never committed.
        result = _nft("-c", "-f", str(path))
        assert result.returncode == 0, f"{name} ruleset:\n{text}\n{result.stderr}"


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"httpjail_t{secrets.token_hex(4)}"
    subprocess.run([str(IP), "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run([str(IP), "netns", "del", name], check=True, capture_output=True, timeout=10)


def _listed(text: str) -> str:
    """What `nft list table` prints for a rendered table: no `create` line, zero counters."""
    body = text.split("\n", 1)[1]
    return body.replace("counter drop", "counter packets 0 bytes 0 drop")


@pytest.mark.root
@needs_nft
@needs_ip
def test_rulesets_load_and_list_back_verbatim_in_a_throwaway_netns(netns: str, tmp_path: Path) -> None:
    host, jail, delete = tmp_path / "host.nft", tmp_path / "jail.nft", tmp_path / "delete.nft"
    host.write_text(render_host_ruleset(SPEC))
    jail.write_text(render_jail_ruleset(SPEC))
    delete.write_text(render_delete(SPEC))

    for path in (host, jail):
        result = _nft("-f", str(path), netns=netns)
        assert result.returncode == 0, result.stderr
    # Listing back exactly what we wrote: nft understood every rule as we meant it.
    listed = _nft("list", "table", "inet", table_name(SPEC), netns=netns)
    assert listed.stdout == _listed(HOST_RULESET), listed.stderr
    listed = _nft("list", "table", "inet", JAIL_TABLE, netns=netns)
    assert listed.stdout == _listed(JAIL_RULESET), listed.stderr

    # `create table`: loading a second time fails instead of appending duplicate rules.
    again = _nft("-f", str(host), netns=netns)
    assert again.returncode != 0 and "File exists" in again.stderr
    assert _nft("list", "table", "inet", table_name(SPEC), netns=netns).stdout == _listed(HOST_RULESET)

    assert _nft("-f", str(delete), netns=netns).returncode == 0
    assert _nft("list", "tables", netns=netns).stdout == f"table inet {JAIL_TABLE}\n"
    # No `destroy` in nft 1.0.6: deleting a table that is gone is an error cleanup must expect.
    gone = _nft("-f", str(delete), netns=netns)
    assert gone.returncode != 0 and "No such file or directory" in gone.stderr


@pytest.mark.root
@needs_nft
def test_rulesets_load_together_and_a_failure_names_where() -> None:
    from httpjail_py.errors import JailSetupError
    from httpjail_py.jail.linux.strong import load_rulesets

    table = f"hjtest_{secrets.token_hex(4)}"
    try:
        where = "cannot load the jail's nftables rules in hjtest-no-such-netns"
        with pytest.raises(JailSetupError, match=where):
            load_rulesets([(f"table inet {table} {{ }}", None), ("table inet x { }", "hjtest-no-such-netns")])
        listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert f"table inet {table}" in listed  # the other one is loaded all the same
        with pytest.raises(JailSetupError, match="on the host: .*syntax error"):
            load_rulesets([("table inet x { not nft at all }", None)])
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
