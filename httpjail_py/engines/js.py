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
// A rule that is one expression is compiled once, into a function: an eval per request
// compiles it again each time (most of a decision's cost). The rest (statements, a block
// or a declaration first, whose value eval gives differently) keep the eval.
var __httpjail_fast = null;
var __httpjail_not_expression = /^\s*(\{|function\b|class\b|async\b|['"]use strict['"])/;
function __httpjail_compile(code) {
  __httpjail_fast = null;
  if (__httpjail_not_expression.test(code)) return;
  try { __httpjail_fast = new Function('r', 'return (' + code + '\n);'); } catch (e) { }
}
function __httpjail_rule(r) { return __httpjail_fast ? __httpjail_fast(r) : eval(__httpjail_code); }
// Syntax checks compile the rule exactly as __httpjail_rule will (a direct eval inside a
// function), behind a `throw` on the same first line so none of it runs and the line
// numbers stay the user's. Wrapping it in a block instead lets `true } else { false`
// through. The strict twin is for rules that start with a 'use strict' directive, which
// the prefix would otherwise hide.
var __httpjail_compiled = {};
function __httpjail_check(code) {
  try { eval('throw __httpjail_compiled;' + code); }
  catch (e) { if (e !== __httpjail_compiled) throw e; }
}
function __httpjail_check_strict(code) {
  'use strict';
  try { eval('throw __httpjail_compiled;' + code); }
  catch (e) { if (e !== __httpjail_compiled) throw e; }
}
// The request comes as arguments rather than one JSON text: most rules never read the
// headers, so they are parsed only when a rule first does.
function __httpjail_run(url, method, scheme, host, port, path, query, headers_json, requester_ip, jail, ip) {
  var r = {url: url, method: method, scheme: scheme, host: host, port: port, path: path, query: query,
           headers: null, requester_ip: requester_ip, jail: jail, ip: ip};
  function own(value) {
    Object.defineProperty(r, 'headers', {value: value, enumerable: true, writable: true, configurable: true});
    return value;
  }
  Object.defineProperty(r, 'headers', {enumerable: true, configurable: true,
    get: function () { return own(JSON.parse(headers_json)); }, set: own});
  var v = __httpjail_rule(r);
  // The common answer, without a round of JSON on each side.
  if (typeof v === 'boolean' && __httpjail_logs.length === 0) return v ? 't' : 'f';
  // JSON has no form for these (a function would vanish from the object); name them.
  var kind = typeof v === 'function' || typeof v === 'symbol' || typeof v === 'bigint'
    ? typeof v : v instanceof Promise ? 'Promise' : '';
  if (kind) v = null;
  var logs = JSON.parse(__httpjail_take_logs());
  return JSON.stringify({v: v === undefined ? null : v, kind: kind, logs: logs});
}
"""

_ALLOW, _DENY = Decision.allow(), Decision.deny()  # immutable: shared by every request
_HEADERS_JSON = json.JSONEncoder(check_circular=False)
_LINE = re.compile(r"<input>:(\d+)")
# Any mention of `ip` (r.ip, r["ip"], a destructured ip): a rule that never names it
# cannot depend on it, and is spared a second evaluation.
_MENTIONS_IP = re.compile(r"\bip\b")
_USE_STRICT = re.compile(r"""\A(?:\s|//[^\n]*|/\*.*?\*/)*(['"])use strict\1""", re.S)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _read_rule(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _why(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start})"
    return error.strerror or str(error)


def _emit_console(entries: list[list[str]]) -> None:
    for level, text in entries:
        level_no = logging.WARNING if level in ("warn", "error") else logging.INFO
        log.log(level_no, "console.%s: %s", level, text)


class JsEngine:
    """Evaluate a JS rule. `evaluate` never raises; every failure denies with a reason."""

    name = "js"

    def __init__(
        self,
        code: str,
        *,
        path: Path | None = None,
        time_limit: float = 0.1,
        mtime_ns: int | None = None,
    ) -> None:
        self._path = path
        self._time_limit = time_limit
        self._context = quickjs.Context()
        self._context.set_memory_limit(MEMORY_LIMIT)
        self._context.set_max_stack_size(1 << 20)
        self._context.eval(_PRELUDE)
        self._run = self._context.get("__httpjail_run")
        self._take_logs = self._context.get("__httpjail_take_logs")
        self._check = self._context.get("__httpjail_check")
        self._check_strict = self._context.get("__httpjail_check_strict")
        self._compile = self._context.get("__httpjail_compile")
        self._context.set_time_limit(time_limit)
        self._install(code, source=str(path) if path else "--js")
        if path is not None and mtime_ns is None:
            mtime_ns = path.stat().st_mtime_ns
        self._mtime_ns = mtime_ns
        self._read_error: str | None = None  # the last reload failure, reported once
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def from_file(cls, path: Path, *, time_limit: float = 0.1) -> JsEngine:
        """Raises RuleError when the file cannot be read or does not compile."""
        try:
            # stat before reading: a change made in between is then seen by the next poll.
            mtime_ns = path.stat().st_mtime_ns
            code = _read_rule(path)
        except (OSError, UnicodeDecodeError) as e:
            raise RuleError(f"--js-file {path}: cannot read it: {_why(e)}") from e
        return cls(code, path=path, time_limit=time_limit, mtime_ns=mtime_ns)

    def _check_syntax(self, code: str, source: str) -> None:
        if code.startswith("#!"):  # a hashbang line runs fine, but only as the very start
            code = "//" + code[2:]
        check = self._check_strict if _USE_STRICT.match(code) else self._check
        try:
            check(code)
        except quickjs.JSException as e:
            m = _LINE.search(str(e))
            where = f" at line {m.group(1)}" if m else ""
            raise RuleError(f"{source}: JavaScript does not compile{where}: {_first_line(e)}") from e

    def _install(self, code: str, source: str) -> None:
        """Syntax-check `code` and make it the active rule. Raises RuleError."""
        self._check_syntax(code, source)
        self._context.set("__httpjail_code", code)
        self._compile(code)
        self.reads_address = _MENTIONS_IP.search(code) is not None

    async def evaluate(self, request: RequestInfo) -> Decision:
        self._ensure_watcher()
        try:
            out = self._run(
                request.url, request.method, request.scheme, request.host, request.port, request.path,
                request.query, _HEADERS_JSON.encode(request.headers), request.requester_ip, request.jail,
                request.ip,
            )
        except quickjs.JSException as e:
            self._drain_console()
            text = _first_line(e)
            budget = f"{self._time_limit * 1000:.0f} ms CPU budget"
            if "interrupted" in text:
                text = f"rule ran past its {budget}"
            elif text in ("", "null", "undefined"):
                # `throw null`, or (seen under load with a memory bomb) quickjs out of
                # memory with no room left for an error object.
                text = "the rule failed without a message (quickjs gives none when out of memory)"
            return Decision.error(f"rule error: {text}")
        except Exception as e:  # a quickjs internal failure must still deny
            return Decision.error(f"rule error: {type(e).__name__}: {e}")
        if out == "t":
            return _ALLOW
        if out == "f":
            return _DENY
        try:
            result = json.loads(out)
            value, kind = result["v"], result["kind"]
            _emit_console(result["logs"])
        except (TypeError, ValueError, KeyError) as e:
            return Decision.error(f"rule result could not be read: {e}")
        if kind:
            hint = " (rules run synchronously; nothing awaits it)" if kind == "Promise" else ""
            return Decision.error(
                f"rule returned a {kind}{hint}; expected true, false or an object "
                "with 'allow' or 'deny_message'"
            )
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
            try:
                await self.reload_if_changed()
            except Exception as e:  # a dead watcher would silently stop all reloads
                log.warning("--js-file %s: reload failed (%s: %s); keeping the previous rule",
                            self._path, type(e).__name__, e)

    async def reload_if_changed(self) -> None:
        """Re-read the rule file when its mtime changed; keep the old rule if the new fails.

        A file that cannot be read is reported once (not on every poll) until it can be.
        """
        assert self._path is not None
        try:
            mtime = (await asyncio.to_thread(os.stat, self._path)).st_mtime_ns
            if mtime == self._mtime_ns and self._read_error is None:
                return
            code = await asyncio.to_thread(_read_rule, self._path)
        except (OSError, UnicodeDecodeError) as e:
            why = _why(e)
            if why != self._read_error:
                log.warning("--js-file %s: cannot read it (%s); keeping the previous rule",
                            self._path, why)
            self._read_error = why
            return
        self._read_error = None
        if mtime == self._mtime_ns:
            return  # readable again, and unchanged
        self._mtime_ns = mtime
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
