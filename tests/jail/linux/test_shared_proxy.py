"""One proxy serving several strong jails at once: each jail's requests are decided and
attributed to it in the audit log, and closing one jail leaves the other working.

In-process, because the `httpjail` command runs one jail per proxy: this drives the same
`attach_jail` the command uses, twice, on one `EmbeddedProxy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

import pytest

from httpjail_py.app import attach_jail
from httpjail_py.ca import ensure_ca
from httpjail_py.cli import parse_config
from httpjail_py.jail.linux.strong import StrongJail
from httpjail_py.proxy.addon import JailAddon
from httpjail_py.proxy.embedded import EmbeddedProxy
from httpjail_py.proxy.resolver import UpstreamResolver
from httpjail_py.recorder import Recorder
from httpjail_py.rules_loader import build_engine
from tests.jail.linux.conftest import leftovers, strong_capability
from tests.jail.linux.sink import Sink
from tests.upstream import Upstream

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(strong_capability() is not None, reason=str(strong_capability())),
]


def curl_status(url: str, out: Path) -> list[str]:
    # `--noproxy`: caught by the jail's NAT, so the proxy must tell the jails apart by
    # their addresses alone.
    return ["sh", "-c", f"curl -sS -m 10 --noproxy '*' -o /dev/null -w '%{{http_code}}\\n' {url} >> {out}"]


def test_one_proxy_serves_two_jails(
    upstream: Upstream, quiet_sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUDO_UID", raising=False)  # the children stay root, without caps
    audit = tmp_path / "audit.jsonl"
    config = parse_config([
        "--js", "r.host === 'ok.test'", "--audit-log", str(audit),
        "--upstream-ca", str(upstream.ca), *upstream.resolve_args(), "--", "true",
    ])
    ok, denied = upstream.url("ok.test", "/echo"), upstream.url("api.test", "/echo")
    out_a, out_b, out_b_after = tmp_path / "a", tmp_path / "b", tmp_path / "b-after"

    async def scenario() -> tuple[str, str, list[str]]:
        ca = await asyncio.to_thread(ensure_ca, tmp_path / "ca")
        engine = build_engine(config)
        recorder = Recorder(audit_log=audit)
        addon = JailAddon(
            engine, recorder, jail_id="unattributed", resolver=UpstreamResolver(config.resolve)
        )
        proxy = EmbeddedProxy(addon, listen=[], confdir=ca.mitmproxy_confdir, upstream_trust=upstream.ca)
        await proxy.start()
        try:
            async with contextlib.AsyncExitStack() as stack_b:
                jail_b = StrongJail(config)
                binds_b = await attach_jail(stack_b, jail_b, proxy, addon)
                async with contextlib.AsyncExitStack() as stack_a:
                    jail_a = StrongJail(config)
                    binds_a = await attach_jail(stack_a, jail_a, proxy, addon)
                    env_a = jail_a.child_env(os.environ, ca, binds_a)
                    env_b = jail_b.child_env(os.environ, ca, binds_b)
                    codes = await asyncio.gather(
                        jail_a.run(curl_status(ok, out_a), env_a),
                        jail_b.run(curl_status(denied, out_b), env_b),
                    )
                    assert codes == [0, 0]
                gone = leftovers(jail_a.jail_id)
                # Jail a is gone, its listeners with it; jail b still goes out.
                assert await jail_b.run(curl_status(ok, out_b_after), env_b) == 0
            return jail_a.jail_id, jail_b.jail_id, gone
        finally:
            await proxy.stop()
            recorder.close()
            await engine.aclose()

    id_a, id_b, left_of_a = asyncio.run(scenario())
    assert id_a != id_b
    assert left_of_a == []
    assert (out_a.read_text(), out_b.read_text(), out_b_after.read_text()) == ("200\n", "403\n", "200\n")
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    seen = [(r["jail"], r["host"], r["decision"]) for r in records]
    assert sorted(seen) == sorted([
        (id_a, "ok.test", "allow"), (id_b, "api.test", "deny"), (id_b, "ok.test", "allow"),
    ])
    assert leftovers(id_b) == []
