"""Wire a run together: rule engine, CA, proxy, jail; undo it all in reverse on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from httpjail_py.ca import CaFiles, ensure_ca, system_ca_file
from httpjail_py.config import JAIL_POOL, Bind, Config, Listener, RunMode
from httpjail_py.destinations import DestinationPolicy
from httpjail_py.errors import JailSetupError
from httpjail_py.jail import select_jail
from httpjail_py.jail.base import Jail
from httpjail_py.jail.signals import block_in_this_thread, hold_signals, on_signals, release_signals
from httpjail_py.proxy.addon import JailAddon
from httpjail_py.proxy.embedded import EmbeddedProxy
from httpjail_py.proxy.limits import JailLimits
from httpjail_py.proxy.resolver import UpstreamResolver
from httpjail_py.recorder import Recorder
from httpjail_py.rules_loader import build_engine
from httpjail_py.testmode import run_test

__all__ = ["attach_jail", "run"]

log = logging.getLogger("httpjail")


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

        jail = None if config.mode is RunMode.SERVER else select_jail(config)
        policy = DestinationPolicy(
            allow_private=config.allow_private,
            jail_networks=[JAIL_POOL],
        )
        addon = JailAddon(
            engine,
            recorder,
            jail_id=jail.jail_id if jail else "server",
            resolver=UpstreamResolver(config.resolve, policy),
            limits=JailLimits(max_in_flight=config.max_connections, rate=config.rate),
            header_timeout=config.header_timeout,
            credentials=config.credentials,
        )
        stop = asyncio.Event()
        if jail is None:
            # In server mode a signal is a request to stop cleanly (exit 0) from before the
            # listeners open: a client may connect the moment they do, and a SIGTERM sent
            # as soon as the port answers must not count as an aborted start.
            on_signals(lambda sig: stop.set())
        # A jail opens its own listeners (`attach_jail`).
        server = [Listener("regular", config.http_bind), Listener("regular", config.https_bind)]
        proxy = EmbeddedProxy(
            addon,
            listen=[] if jail else server,
            confdir=ca.mitmproxy_confdir,
            upstream_trust=trust,  # type: ignore[arg-type]
            verify_upstream=config.verify_upstream,
            connect_timeout=config.connect_timeout,
        )
        binds = await proxy.start()
        stack.push_async_callback(proxy.stop)
        if jail is None:
            _say(f"proxy listening on {binds[0]} (HTTP) and {binds[1]} (HTTPS); CA: {ca.cert}")
            for secret in config.credentials.secrets:
                _say(f"{secret.name}: give clients {secret.placeholder} (for {', '.join(secret.hosts)})")
            return await _serve_until(stop)

        binds = await attach_jail(stack, jail, proxy, addon)
        log.info("jail %s ready; proxy on %s and %s", jail.name, binds[0], binds[1])
        env = jail.child_env(os.environ, ca, binds)
        return await jail.run(config.command, env)
    raise AssertionError("unreachable")


async def attach_jail(
    stack: contextlib.AsyncExitStack, jail: Jail, proxy: EmbeddedProxy, addon: JailAddon
) -> list[Bind]:
    """Build `jail` and serve it from the running `proxy`: its listeners opened, its
    connections attributed to it. Returns the listeners' addresses, in the order of
    `jail.listeners()`. `stack` undoes it all, the jail last. One proxy can serve several
    jails this way."""
    stack.push_async_callback(jail.teardown)
    await jail.prepare()
    listeners = jail.listeners()
    binds = await proxy.add_listeners(listeners)
    stack.push_async_callback(proxy.remove_listeners, listeners)
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
