"""Wire a run together: rule engine, CA, proxy, jail; undo it all in reverse on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from httpjail_py.ca import CaFiles, ensure_ca, system_ca_file
from httpjail_py.config import Config, RunMode
from httpjail_py.errors import JailSetupError
from httpjail_py.jail import select_jail
from httpjail_py.proxy.addon import JailAddon
from httpjail_py.proxy.embedded import EmbeddedProxy
from httpjail_py.recorder import Recorder
from httpjail_py.rules_loader import build_engine
from httpjail_py.testmode import run_test

__all__ = ["run"]

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
    """Run what `config` asks for. Returns the exit status. Raises HttpjailError."""
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
        recorder = Recorder(request_log=config.request_log, audit_log=config.audit_log)
        stack.callback(recorder.close)
        stack.callback(lambda: (line := recorder.summary()) and _say(line))

        trust = await _upstream_trust(config, ca)
        if trust is not None:
            stack.callback(os.unlink, trust)
        if not config.verify_upstream:
            _say("WARNING: upstream TLS certificates are NOT verified "
                 "(HTTPJAIL_DANGER_DISABLE_CERT_VALIDATION is set)")

        jail = None if config.mode is RunMode.SERVER else select_jail(config)
        addon = JailAddon(engine, recorder, jail_id=f"{jail.name}-{os.getpid()}" if jail else "server")
        listen = jail.listen() if jail else [config.http_bind, config.https_bind]
        proxy = EmbeddedProxy(
            addon,
            listen=listen,
            confdir=ca.mitmproxy_confdir,
            upstream_trust=trust,  # type: ignore[arg-type]
            verify_upstream=config.verify_upstream,
            resolve=config.resolve,
        )
        binds = await proxy.start()
        stack.push_async_callback(proxy.stop)

        if jail is None:
            _say(f"proxy listening on {binds[0]} (HTTP) and {binds[1]} (HTTPS); CA: {ca.cert}")
            return await _serve_until_signalled()

        stack.push_async_callback(jail.teardown)
        await jail.setup(binds)
        log.info("jail %s ready; proxy on %s and %s", jail.name, binds[0], binds[1])
        env = jail.child_env(os.environ, ca, binds)
        return await jail.run(config.command, env)
    raise AssertionError("unreachable")


async def _serve_until_signalled() -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    _say("stopping")
    return 0
