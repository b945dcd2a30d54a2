"""Import modules in a thread of their own while the event loop goes on.

httpjail starts the jailed command before mitmproxy is loaded (`listening`), and loads it
meanwhile: its imports take a few hundred milliseconds, in which the loop must still see
signals, the command's exit, and the DNS sinkhole's queries.

The thread is a daemon: when the command is over before the imports are, nothing waits
for them (asyncio.run joins the default executor's threads, not this one).
"""

from __future__ import annotations

import asyncio
import importlib
import threading

from httpjail_py.jail.signals import block_in_this_thread

__all__ = ["import_in_background"]


def import_in_background(*modules: str) -> asyncio.Future[None]:
    """Start importing `modules`, in order. The future is done when they are imported,
    or has the exception that stopped the imports."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def work() -> None:
        block_in_this_thread()
        error: BaseException | None = None
        try:
            for name in modules:
                importlib.import_module(name)
        except BaseException as e:  # noqa: BLE001 (handed to the awaiting task)
            error = e
        try:
            loop.call_soon_threadsafe(settle, error)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    threading.Thread(target=work, name="httpjail-imports", daemon=True).start()
    return done
