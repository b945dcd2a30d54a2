"""Weak mode: the child is only told, through environment variables, to use the proxy.

Nothing stops a program that ignores HTTP_PROXY; that is what the strong jail is for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from httpjail_py.ca import CaFiles
from httpjail_py.config import Bind, Listener
from httpjail_py.jail.base import Jail
from httpjail_py.jail.child import run_child

__all__ = ["WeakJail", "own_loopback_env", "proxied_env", "proxy_env"]

# Variables that would let some hosts bypass the proxy.
_BYPASS_VARS = ("NO_PROXY", "no_proxy")


def proxied_env(env: Mapping[str, str], ca: CaFiles, http_proxy: Bind, https_proxy: Bind) -> dict[str, str]:
    """`env` as a jailed child gets it: no proxy bypass, our CA trusted, the proxy named."""
    out = {k: v for k, v in env.items() if k not in _BYPASS_VARS}
    out.update(ca.child_env())
    out.update(proxy_env(http_proxy, https_proxy))
    return out


def proxy_env(http_proxy: Bind, https_proxy: Bind) -> dict[str, str]:
    http_url, https_url = f"http://{http_proxy}", f"http://{https_proxy}"
    return {
        "HTTP_PROXY": http_url,
        "http_proxy": http_url,
        "HTTPS_PROXY": https_url,
        "https_proxy": https_url,
        "ALL_PROXY": http_url,
        "all_proxy": http_url,
    }


def own_loopback_env() -> dict[str, str]:
    """NO_PROXY for a jail with a loopback of its own (strong, Docker): local servers the
    command starts (Codex's TUI talks to one) are reached directly, as without the jail.
    Nothing leaves that way: the jail's 127.0.0.1 is not the host's. Weak mode must not
    set it: there, 127.0.0.1 is the host's."""
    local = "localhost,127.0.0.1,::1"
    return {"NO_PROXY": local, "no_proxy": local}


class WeakJail(Jail):
    name = "weak"

    def listeners(self) -> list[Listener]:
        return [Listener("regular", self.config.http_bind), Listener("regular", self.config.https_bind)]

    def child_env(self, env: Mapping[str, str], ca: CaFiles, bound: Sequence[Bind]) -> dict[str, str]:
        return proxied_env(env, ca, bound[0], bound[1])

    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], started: Callable[[], object] | None = None
    ) -> int:
        return await run_child(argv, env, timeout=self.config.timeout, started=started)
