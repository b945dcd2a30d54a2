"""Wire a run together: rule engine, CA, proxy, jail; undo it all in reverse on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from httpjail_py.background_import import import_in_background
from httpjail_py.ca import CaFiles, ensure_ca, system_ca_file
from httpjail_py.config import JAIL_POOL, Bind, Config, Listener, RunMode
from httpjail_py.destinations import DestinationPolicy
from httpjail_py.engines.base import RuleEngine
from httpjail_py.errors import HttpjailError, JailSetupError
from httpjail_py.jail import select_jail
from httpjail_py.jail.base import Jail
from httpjail_py.jail.signals import block_in_this_thread, hold_signals, on_signals, release_signals
from httpjail_py.listening import OpenListeners, open_listeners
from httpjail_py.recorder import Recorder
from httpjail_py.rules_loader import build_engine
from httpjail_py.testmode import run_test

if TYPE_CHECKING:
    from httpjail_py.proxy.addon import JailAddon
    from httpjail_py.proxy.embedded import EmbeddedProxy

__all__ = ["attach_jail", "run"]

log = logging.getLogger("httpjail")

# What loads mitmproxy (0.3 s and more): imported while the jailed command starts.
PROXY_MODULES = ("httpjail_py.proxy.embedded", "httpjail_py.proxy.resolver", "httpjail_py.proxy.limits")


def _say(message: str) -> None:
    print(f"httpjail: {message}", file=sys.stderr, flush=True)


async def _upstream_trust(config: Config, ca: CaFiles) -> os.PathLike[str] | None:
    """A trust file for upstream TLS: the system store plus every --upstream-ca.

    mitmproxy's option replaces its store rather than adding to it, so we concatenate.
    """
    if not config.upstream_cas:
        return None

    def build() -> os.PathLike[str]:
        system = system_ca_file()
        parts = [system.read_bytes()] if system else []
        for path in config.upstream_cas:
            parts.append(path.read_bytes())
        out = ca.mitmproxy_confdir / f"upstream-trust-{os.getpid()}.pem"
        out.write_bytes(b"\n".join(parts))
        return out

    return await asyncio.to_thread(build)


async def run(config: Config) -> int:
    """Run what `config` asks for. Returns the exit status. Raises HttpjailError.

    Side effect: handles SIGINT, SIGTERM, SIGHUP and SIGQUIT (see `jail.signals`). One
    that arrives before the command starts ends the run with 128+N. After a normal
    return, they make the process exit at once with the returned status: the caller is
    expected to exit with it.
    """
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def abort(sig: int) -> None:
        received.append(sig)
        hold_signals()
        task.cancel()

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_exception)
    loop.set_default_executor(ThreadPoolExecutor(initializer=block_in_this_thread))
    on_signals(abort)
    try:
        status = await _run(config)
    except asyncio.CancelledError:
        if not received:
            release_signals()
            raise
        task.uncancel()
        status = 128 + received[0]
    except BaseException:
        release_signals()
        raise
    release_signals(then_exit=status)
    return status


def _print_summary(recorder: Recorder) -> None:
    if line := recorder.summary():
        _say(line)


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Drop one known bit of noise; hand everything else to asyncio's handler.

    When the proxy stops with a client connected, mitmproxy cancels that connection's
    task, and asyncio (3.12.1's `start_server` callback calls `task.exception()` on it)
    then reports a CancelledError "in callback" with a traceback. Nothing went wrong.
    """
    if isinstance(context.get("exception"), asyncio.CancelledError):
        log.debug("ignored at shutdown: %s", context.get("message"))
        return
    loop.default_exception_handler(context)


async def _run(config: Config) -> int:
    # Before anything is started: rule processes and the command get placeholders only.
    config.credentials.hide_from_children(os.environ)
    engine = build_engine(config)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(engine.aclose)
        if config.mode is RunMode.TEST:
            return await run_test(engine, config.test_method, config.test_url)

        try:
            ca = await asyncio.to_thread(ensure_ca)
        except OSError as e:
            raise JailSetupError(
                f"cannot create or read the CA in {e.filename}: {e.strerror}; "
                "set XDG_CONFIG_HOME to a writable directory"
            ) from e
        recorder = Recorder(
            request_log=config.request_log, audit_log=config.audit_log, redact=config.credentials.redact
        )
        stack.callback(recorder.close)
        stack.callback(_print_summary, recorder)

        trust = await _upstream_trust(config, ca)
        if trust is not None:
            stack.callback(os.unlink, trust)
        if not config.verify_upstream:
            _say(
                "WARNING: upstream TLS certificates are NOT verified "
                "(HTTPJAIL_DANGER_DISABLE_CERT_VALIDATION is set)"
            )
        parts = _ProxyParts(config, engine, recorder, ca, trust)
        if config.mode is RunMode.SERVER:
            return await _serve(stack, parts)
        return await _run_jailed(stack, parts, select_jail(config))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class _ProxyParts:
    """What the run's proxy is made of."""

    config: Config
    engine: RuleEngine
    recorder: Recorder
    ca: CaFiles
    trust: os.PathLike[str] | None

    def make(
        self, jail_id: str, listen: list[Listener], sockets: Mapping[Bind, socket.socket] | None = None
    ) -> tuple[JailAddon, EmbeddedProxy]:
        """The addon and the proxy (not started). Needs PROXY_MODULES imported."""
        from httpjail_py.proxy.addon import JailAddon
        from httpjail_py.proxy.embedded import EmbeddedProxy
        from httpjail_py.proxy.limits import JailLimits
        from httpjail_py.proxy.resolver import UpstreamResolver

        config = self.config
        policy = DestinationPolicy(allow_private=config.allow_private, jail_networks=[JAIL_POOL])
        addon = JailAddon(
            self.engine,
            self.recorder,
            jail_id=jail_id,
            resolver=UpstreamResolver(config.resolve, policy),
            limits=JailLimits(max_in_flight=config.max_connections, rate=config.rate),
            header_timeout=config.header_timeout,
            credentials=config.credentials,
        )
        proxy = EmbeddedProxy(
            addon,
            listen=listen,
            sockets=sockets,
            confdir=self.ca.mitmproxy_confdir,
            upstream_trust=self.trust,  # type: ignore[arg-type]
            verify_upstream=config.verify_upstream,
            connect_timeout=config.connect_timeout,
        )
        return addon, proxy


async def _load_proxy() -> None:
    """Import PROXY_MODULES in a thread: the loop goes on meanwhile (signals, the command)."""
    try:
        await import_in_background(*PROXY_MODULES)
    except Exception as e:
        raise JailSetupError(f"cannot load the proxy (mitmproxy): {type(e).__name__}: {e}") from e


async def _serve(stack: contextlib.AsyncExitStack, parts: _ProxyParts) -> int:
    """`--server`: the proxy alone, until a signal."""
    config = parts.config
    # A signal is a request to stop cleanly (exit 0) from before the listeners open: a
    # client may connect the moment they do, and a SIGTERM sent as soon as the port
    # answers must not count as an aborted start.
    stop = asyncio.Event()
    on_signals(lambda sig: stop.set())
    await _load_proxy()
    listen = [Listener("regular", config.http_bind), Listener("regular", config.https_bind)]
    _, proxy = parts.make("server", listen)
    binds = await proxy.start()
    stack.push_async_callback(proxy.stop)
    _say(f"proxy listening on {binds[0]} (HTTP) and {binds[1]} (HTTPS); CA: {parts.ca.cert}")
    for secret in config.credentials.secrets:
        _say(f"{secret.name}: give clients {secret.placeholder} (for {', '.join(secret.hosts)})")
    return await _serve_until(stop)


async def _run_jailed(stack: contextlib.AsyncExitStack, parts: _ProxyParts, jail: Jail) -> int:
    """Build the jail, start the command in it, and load the proxy while it starts.

    The jail is whole before the command runs (rules loaded, the proxy's sockets
    listening: `listening`); what the command sends in its first moments waits in the
    kernel's queue of those sockets until the proxy takes it. If the proxy cannot start,
    the command is stopped and the run fails with the reason.
    """
    listening = await _open_jail(stack, jail)
    await jail.setup(listening.binds)
    env = jail.child_env(os.environ, parts.ca, listening.binds)
    started = asyncio.Event()
    command = asyncio.create_task(jail.run(parts.config.command, env, started.set), name="command")
    serving = asyncio.create_task(_serve_jail(stack, parts, jail, listening, started), name="proxy")
    try:
        await asyncio.wait([command, serving], return_when=asyncio.FIRST_COMPLETED)
        if serving.done() and (error := serving.exception()) is not None:
            running = command.cancel()
            await asyncio.gather(command, return_exceptions=True)
            if isinstance(error, HttpjailError) and running:
                raise JailSetupError(f"{error}; the command was stopped") from error
            raise error
        return await command
    finally:
        for task in (command, serving):
            task.cancel()
        await asyncio.wait([command, serving])
        for task in (command, serving):  # an error that came with the cancel: retrieved
            if not task.cancelled():
                task.exception()


async def _serve_jail(
    stack: contextlib.AsyncExitStack,
    parts: _ProxyParts,
    jail: Jail,
    listening: OpenListeners,
    command_started: asyncio.Event,
) -> None:
    # Loaded once the command runs: imports that share the interpreter with the jail's
    # set-up (one thread runs Python at a time) made the command start later, not sooner.
    await command_started.wait()
    await _load_proxy()
    addon, proxy = parts.make(jail.jail_id, listening.listeners, listening.sockets)
    if (client := jail.client()) is not None:
        addon.register_jail(client.address, client.jail_id, client.name_for)
    stack.push_async_callback(proxy.stop)
    binds = await proxy.start()
    log.info("jail %s ready; proxy on %s and %s", jail.name, binds[0], binds[1])


async def _open_jail(stack: contextlib.AsyncExitStack, jail: Jail) -> OpenListeners:
    """`jail` prepared and the proxy's sockets for it open; `stack` undoes both."""
    stack.push_async_callback(jail.teardown)
    await jail.prepare()
    listening = open_listeners(jail.listeners())
    stack.callback(listening.close)
    return listening


async def attach_jail(
    stack: contextlib.AsyncExitStack, jail: Jail, proxy: EmbeddedProxy, addon: JailAddon
) -> list[Bind]:
    """Build `jail` and serve it from the running `proxy`: its listeners opened, its
    connections attributed to it. Returns the listeners' addresses, in the order of
    `jail.listeners()`. `stack` undoes it all, the jail last. One proxy can serve several
    jails this way."""
    listening = await _open_jail(stack, jail)
    binds = await proxy.add_listeners(listening.listeners, listening.sockets)
    stack.push_async_callback(proxy.remove_listeners, listening.listeners)
    if (client := jail.client()) is not None:
        addon.register_jail(client.address, client.jail_id, client.name_for)
        stack.callback(addon.unregister_jail, client.address)
    await jail.setup(binds)
    return binds


async def _serve_until(stop: asyncio.Event) -> int:
    try:
        await stop.wait()
    finally:
        hold_signals()
    _say("stopping")
    return 0
