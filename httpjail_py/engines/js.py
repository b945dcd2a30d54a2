"""JavaScript rules, evaluated by QuickJS on the proxy's event loop.

The rule is a script whose last expression is the result (as in httpjail). It runs
through a direct `eval` inside a function, so each request gets fresh `const`/`let`
bindings and the script's completion value comes back, with `r` in scope.

We call the `quickjs.Context` directly (~7 µs a request), not `quickjs.Function`, which
hops to a worker thread per call (~120 µs). The Context's time limit interrupts a rule
that runs past its CPU budget, so an infinite loop costs one budget and then denies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path

import quickjs

from httpjail_py.engines.base import Decision, RequestInfo
from httpjail_py.engines.result import parse_result
from httpjail_py.errors import RuleError

__all__ = ["JsEngine"]

log = logging.getLogger("httpjail.rules")

MEMORY_LIMIT = 64 << 20
RELOAD_POLL_SECONDS = 0.2

# The prelude defines `console` and the entry points. `__httpjail_run` takes the request
# as JSON text and returns JSON text, so conversion happens in one place. quickjs refuses
# to call into Python while a time limit is set, so console output is buffered in JS
# (bounded) and handed back with the result.
_PRELUDE = r"""
var __httpjail_logs = [];
function __httpjail_log(level, text) {
  if (__httpjail_logs.length < 100) __httpjail_logs.push([level, text.slice(0, 2000)]);
}
function __httpjail_take_logs() {
  var out = JSON.stringify(__httpjail_logs);
  __httpjail_logs = [];
  return out;
}
var console = (function () {
  function fmt(args) {
    return Array.prototype.map.call(args, function (a) {
      if (typeof a === 'string') return a;
      try { return JSON.stringify(a); } catch (e) { return String(a); }
    }).join(' ');
  }
  return {
    log: function () { __httpjail_log('log', fmt(arguments)); },
    info: function () { __httpjail_log('info', fmt(arguments)); },
    warn: function () { __httpjail_log('warn', fmt(arguments)); },
    error: function () { __httpjail_log('error', fmt(arguments)); },
    debug: function () { __httpjail_log('debug', fmt(arguments)); },
  };
})();
var __httpjail_code = '';
function __httpjail_rule(r) { return eval(__httpjail_code); }
function __httpjail_run(request_json) {
  var v = __httpjail_rule(JSON.parse(request_json));
  return JSON.stringify({v: v === undefined ? null : v, logs: JSON.parse(__httpjail_take_logs())});
}
"""

_LINE = re.compile(r"<input>:(\d+)")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _emit_console(entries: list[list[str]]) -> None:
    for level, text in entries:
        log.log(logging.WARNING if level in ("warn", "error") else logging.INFO, "console.%s: %s", level, text)


class JsEngine:
    """Evaluate a JS rule. `evaluate` never raises; every failure denies with a reason."""

    name = "js"

    def __init__(self, code: str, *, path: Path | None = None, time_limit: float = 0.1) -> None:
        self._path = path
        self._time_limit = time_limit
        self._context = quickjs.Context()
        self._context.set_memory_limit(MEMORY_LIMIT)
        self._context.set_max_stack_size(1 << 20)
        self._context.eval(_PRELUDE)
        self._run = self._context.get("__httpjail_run")
        self._take_logs = self._context.get("__httpjail_take_logs")
        self._context.set_time_limit(time_limit)
        self._install(code, source=str(path) if path else "--js")
        self._mtime_ns = path.stat().st_mtime_ns if path else None
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def from_file(cls, path: Path, *, time_limit: float = 0.1) -> JsEngine:
        try:
            code = path.read_text()
        except OSError as e:
            raise RuleError(f"--js-file {path}: cannot read it: {e.strerror or e}") from e
        return cls(code, path=path, time_limit=time_limit)

    def _check_syntax(self, code: str, source: str) -> None:
        # Compiled inside a block that never runs, on the same first line, so the line
        # numbers quickjs reports are the user's.
        try:
            self._context.eval("if (0) {" + code + "\n}")
        except quickjs.JSException as e:
            m = _LINE.search(str(e))
            where = f" at line {m.group(1)}" if m else ""
            raise RuleError(f"{source}: JavaScript does not compile{where}: {_first_line(e)}") from e

    def _install(self, code: str, source: str) -> None:
        """Syntax-check `code` and make it the active rule. Raises RuleError."""
        self._check_syntax(code, source)
        self._context.set("__httpjail_code", code)

    async def evaluate(self, request: RequestInfo) -> Decision:
        self._ensure_watcher()
        try:
            out = self._run(json.dumps(request.as_rule_input()))
        except quickjs.JSException as e:
            self._drain_console()
            text = _first_line(e)
            if "interrupted" in text:
                text = f"rule ran past its {self._time_limit * 1000:.0f} ms CPU budget"
            return Decision.error(f"rule error: {text}")
        except Exception as e:  # a quickjs internal failure must still deny
            return Decision.error(f"rule error: {type(e).__name__}: {e}")
        try:
            result = json.loads(out)
            value = result["v"]
            _emit_console(result["logs"])
        except (TypeError, ValueError, KeyError) as e:
            return Decision.error(f"rule result could not be read: {e}")
        return parse_result(value)

    def _drain_console(self) -> None:
        try:
            _emit_console(json.loads(self._take_logs()))
        except Exception as e:  # the rule's failure is what matters; say why logs are lost
            log.debug("console output of a failed rule was lost: %s", e)

    # --- reloading --js-file -------------------------------------------------------

    def _ensure_watcher(self) -> None:
        if self._path is not None and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        assert self._path is not None
        while True:
            await asyncio.sleep(RELOAD_POLL_SECONDS)
            await self.reload_if_changed()

    async def reload_if_changed(self) -> None:
        """Re-read the rule file when its mtime changed; keep the old rule if the new fails."""
        assert self._path is not None
        try:
            mtime = (await asyncio.to_thread(os.stat, self._path)).st_mtime_ns
            if mtime == self._mtime_ns:
                return
            self._mtime_ns = mtime
            code = await asyncio.to_thread(self._path.read_text)
        except OSError as e:
            log.warning("--js-file %s: cannot read it (%s); keeping the previous rule", self._path, e)
            return
        try:
            self._install(code, source=str(self._path))
        except RuleError as e:
            log.warning("%s; keeping the previous rule", e)
            return
        log.info("--js-file %s: reloaded", self._path)

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
