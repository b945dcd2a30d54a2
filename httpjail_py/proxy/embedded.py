"""Start and stop mitmproxy in-process, on the caller's event loop, with our addon first.

Only the addons a filtering proxy needs are loaded (faster start, less memory). The
`DnsResolver` addon is left out on purpose: it would resolve names for real before our
hooks run. `connection_strategy` is `lazy`: with `eager`, a CONNECT (and later the
transparent mode) dials the destination before any rule has run.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from mitmproxy import options
from mitmproxy.addons import core, disable_h2c, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.proxy import mode_specs

from httpjail_py.config import DEFAULT_CONNECT_TIMEOUT, Bind, Listener
from httpjail_py.errors import JailSetupError
from httpjail_py.listening import cannot_listen
from httpjail_py.proxy import adopted, patches
from httpjail_py.proxy.addon import JailAddon

__all__ = ["EmbeddedProxy"]

log = logging.getLogger("httpjail.proxy")


class EmbeddedProxy:
    """One mitmproxy instance serving `regular` (forward proxy) and `transparent` listeners.

    Usage: `binds = await proxy.start()` ... `await proxy.stop()`.
    """

    def __init__(
        self,
        addon: JailAddon,
        *,
        listen: Sequence[Listener],
        sockets: Mapping[Bind, socket.socket] | None = None,
        confdir: Path,
        upstream_trust: Path | None,
        verify_upstream: bool = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self._addon = addon
        self._listen = list(listen)
        self._sockets = dict(sockets or {})
        self._confdir = confdir
        self._upstream_trust = upstream_trust
        self._verify_upstream = verify_upstream
        self._connect_timeout = connect_timeout
        self._master: Master | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> list[Bind]:
        """Start listening. Returns the bound addresses, in the order of `listen`.

        `sockets`: listening sockets opened already (`listening.open_listeners`), by the
        address of their listener in `listen`; they are served as they are.
        Raises JailSetupError when a listener cannot be opened (e.g. port in use).
        """
        loop = asyncio.get_running_loop()
        self._addon.resolver.install(loop)
        if not (patches.install() and adopted.install()):
            from mitmproxy import version

            raise JailSetupError(
                f"mitmproxy {version.VERSION} is not supported (httpjail needs 12.x): "
                "its HTTP internals differ from what httpjail_py/proxy/patches.py fixes"
            )
        opts = options.Options()
        opts.add_option(patches.CONNECT_TIMEOUT_OPTION, float, self._connect_timeout,
                        "seconds for the TCP connect to an upstream (httpjail --connect-timeout)")
        master = Master(opts, event_loop=loop)
        self._proxyserver = proxyserver.Proxyserver()
        master.addons.add(
            self._addon,
            core.Core(),
            disable_h2c.DisableH2C(),
            self._proxyserver,
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
        )
        updates: dict[str, object] = {
            "mode": self._modes(),
            "confdir": str(self._confdir),
            "connection_strategy": "lazy",
            "ssl_insecure": not self._verify_upstream,
        }
        if self._upstream_trust is not None:
            # Replaces the default store; the caller puts the system CAs in this file too.
            updates["ssl_verify_upstream_trusted_ca"] = str(self._upstream_trust)
        self._adopt(self._sockets)
        opts.update(**updates)
        self._master = master
        self._task = loop.create_task(master.run(), name="mitmproxy")
        started = loop.create_task(self._addon.started.wait())
        await asyncio.wait([self._task, started], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            started.cancel()
            self._task.result()
            raise JailSetupError("the proxy stopped while starting")
        return await self._bound(self._listen)

    async def add_listeners(
        self, listen: Sequence[Listener], sockets: Mapping[Bind, socket.socket] | None = None
    ) -> list[Bind]:
        """Open more listeners on the running proxy (another jail's), or serve `sockets`
        for them (as `start`). Returns their bound addresses, in order. Raises
        JailSetupError when one cannot be opened; the others are closed again then."""
        self._adopt(sockets or {})
        self._sockets.update(sockets or {})
        self._listen += [listener for listener in listen if listener not in self._listen]
        await self._apply_modes()
        try:
            return await self._bound(listen, stop_on_error=False)
        except JailSetupError:
            await self.remove_listeners(listen)
            raise

    async def remove_listeners(self, listen: Sequence[Listener]) -> None:
        """Close listeners opened with `add_listeners`. Connections already accepted on
        them go on until they end."""
        self._listen = [listener for listener in self._listen if listener not in listen]
        if self._master is not None:
            await self._apply_modes()

    def _adopt(self, sockets: Mapping[Bind, socket.socket]) -> None:
        adopted.adopt(sockets)
        # A request for the proxy itself is refused, whatever range is open: known before
        # the first queued connection is taken.
        self._addon.resolver.policy.own_listeners.update((b.host, b.port) for b in sockets)

    def _modes(self) -> list[str]:
        # Identical binds (both ports 0 in weak mode) share one listener: mitmproxy
        # refuses two servers with the same spec.
        return list(dict.fromkeys(listener.spec() for listener in self._listen))

    async def _apply_modes(self) -> None:
        assert self._master is not None, "the proxy is not running"
        modes = self._modes()
        # Setting the option starts the change in a task of its own; the server manager
        # serialises changes, so awaiting the same update here returns once it is done.
        self._master.options.update(mode=modes)
        await self._proxyserver.servers.update([mode_specs.ProxyMode.parse(m) for m in modes])

    async def _bound(self, listen: Sequence[Listener], *, stop_on_error: bool = True) -> list[Bind]:
        binds: list[Bind] = []
        for wanted in listen:
            server = self._proxyserver.servers[wanted.spec()]
            if not server.is_running:
                if stop_on_error:
                    await self.stop()
                raise cannot_listen(wanted.bind, server.last_exception)
            for host, port, *_ in server.listen_addrs:
                # A request for the proxy itself is refused, whatever range is open.
                self._addon.resolver.policy.own_listeners.add((str(host), int(port)))
            host, port = server.listen_addrs[0][:2]
            binds.append(Bind(host, port))
        return binds

    async def stop(self) -> None:
        adopted.forget(self._sockets)
        if self._master is None or self._task is None:
            return
        self._master.shutdown()
        try:
            await asyncio.wait_for(self._task, timeout=10)
        except TimeoutError:
            log.warning("the proxy did not stop within 10 s")
        self._master = None
