"""JavaScript rules (engines/js.py): what `r` holds, what the script returns, and how
every failure denies."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import pytest

from httpjail_py.engines.base import Action, Decision, Reason, RequestInfo
from httpjail_py.engines.js import JsEngine
from httpjail_py.errors import RuleError

NOT_JSON_RESULT = "expected true, false or an object with 'allow' or 'deny_message'"


def request(host: str = "api.test", method: str = "GET", **kw: object) -> RequestInfo:
    fields: dict[str, object] = {"scheme": "https", "port": 443, "path": "/"} | kw
    return RequestInfo(method=method, host=host, **fields)  # type: ignore[arg-type]


def decide(engine: JsEngine, *requests: RequestInfo) -> list[Decision]:
    async def run() -> list[Decision]:
        try:
            return [await engine.evaluate(r) for r in requests]
        finally:
            await engine.aclose()

    return asyncio.run(run())


def verdicts(code: str, *requests: RequestInfo) -> list[str]:
    return ["ALLOW" if d.allowed else "DENY" for d in decide(JsEngine(code), *requests)]


def assert_rule_error(decision: Decision, says: str) -> None:
    assert decision.action is Action.DENY
    assert decision.reason is Reason.RULE_ERROR
    assert decision.message is not None and says in decision.message, decision.message


# --- what the rule sees ------------------------------------------------------------


def test_r_holds_every_field() -> None:
    req = RequestInfo(
        method="POST",
        scheme="https",
        host="api.test",
        port=8443,
        path="/v1/chat",
        query="a=1&b=two",
        headers={"Content-Type": "application/json", "X-Custom": "yes"},
        requester_ip="10.99.0.2",
        jail="weak-1234",
        ip="192.0.2.7",
    )
    [decision] = decide(JsEngine("({deny_message: JSON.stringify(r)})"), req)
    assert decision.message is not None
    assert json.loads(decision.message) == {
        "url": "https://api.test:8443/v1/chat?a=1&b=two",
        "method": "POST",
        "scheme": "https",
        "host": "api.test",
        "port": 8443,
        "path": "/v1/chat",
        "query": "a=1&b=two",
        "headers": {"content-type": "application/json", "x-custom": "yes"},
        "requester_ip": "10.99.0.2",
        "jail": "weak-1234",
        "ip": "192.0.2.7",
    }


def test_rules_can_test_lower_cased_header_names() -> None:
    rule = "r.headers['authorization'] === 'Bearer k' && r.headers['Authorization'] === undefined"
    assert verdicts(rule, request(headers={"Authorization": "Bearer k"})) == ["ALLOW"]


@pytest.mark.parametrize(
    ("scheme", "host", "port", "path", "query", "url"),
    [
        ("https", "a.test", 443, "/", "", "https://a.test/"),
        ("http", "a.test", 80, "/x", "q=1", "http://a.test/x?q=1"),
        ("http", "a.test", 443, "/", "", "http://a.test:443/"),
        ("https", "a.test", 8443, "/p", "", "https://a.test:8443/p"),
        ("https", "2001:db8::1", 443, "/", "", "https://[2001:db8::1]/"),
        ("http", "::1", 8080, "/", "", "http://[::1]:8080/"),
    ],
)
def test_r_url_leaves_out_default_ports(scheme, host, port, path, query, url) -> None:
    req = RequestInfo(method="GET", scheme=scheme, host=host, port=port, path=path, query=query)
    assert req.url == url
    assert verdicts(f"r.url === {json.dumps(url)}", req) == ["ALLOW"]


# --- the script and its result ------------------------------------------------------


def test_last_expression_is_the_verdict_and_const_works_on_every_request() -> None:
    # why: a rule evaluated in one shared scope would throw "redeclaration of allowed"
    # on the second request and so deny everything after the first.
    rule = "const allowed = ['a.test', 'b.test'];\nlet n = 0; n += 1;\nn === 1 && allowed.includes(r.host)"
    hosts = ["a.test", "evil.test", "b.test", "a.test"]
    assert verdicts(rule, *map(request, hosts)) == ["ALLOW", "DENY", "ALLOW", "ALLOW"]


def test_statement_completion_value_and_functions() -> None:
    rule = "function ours(h) { return h.endsWith('.test'); }\nif (ours(r.host)) { true } else { false }"
    assert verdicts(rule, request("a.test"), request("example.com")) == ["ALLOW", "DENY"]


def test_iife_with_return() -> None:
    rule = """(() => {
        if (r.method === 'GET') return true;
        return {deny_message: 'no ' + r.method + ' to ' + r.host};
    })()"""
    get, post = decide(JsEngine(rule), request(), request(method="POST"))
    assert get.allowed
    assert not post.allowed and post.reason is Reason.RULE_DENIED
    assert post.message == "no POST to api.test"


def test_object_results_come_through() -> None:
    capped, denied = decide(
        JsEngine("r.method === 'GET' ? {allow: {max_tx_bytes: 4096}} : {deny_message: 'read-only'}"),
        request(),
        request(method="PUT"),
    )
    assert capped.allowed and capped.max_tx_bytes == 4096
    assert not denied.allowed and denied.message == "read-only"


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ("42", "rule returned number 42"),
        ("'yes'", "rule returned string 'yes'"),
        ("undefined", "rule returned null/undefined"),
        ("", "rule returned null/undefined"),
        ("// nothing but a comment", "rule returned null/undefined"),
        ("({})", "neither 'allow' nor 'deny_message'"),
        ("({allwo: true})", "(keys: allwo)"),
        ("[true]", "rule returned an array"),
        ("({allow: NaN})", "'allow' is null/undefined"),
        ("({allow: () => true})", "neither 'allow' nor 'deny_message'"),
        ("(function () { return true; })", f"rule returned a function; {NOT_JSON_RESULT}"),
        ("Symbol('x')", "rule returned a symbol"),
        ("10n", "rule returned a bigint"),
        ("Promise.resolve(true)", "rule returned a Promise"),
        ("(() => { const o = {}; o.self = o; return o; })()", "circular"),
    ],
)
def test_wrong_result_types_deny(rule: str, says: str) -> None:
    [decision] = decide(JsEngine(rule), request())
    assert_rule_error(decision, says)


# --- fail closed ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ("throw new Error('boom')", "Error: boom"),
        ("r.nope.deeper === 1", "TypeError"),
        ("undefinedFunction()", "ReferenceError"),
        ("function f() { return f(); } f()", "stack overflow"),
    ],
)
def test_runtime_exceptions_deny(rule: str, says: str) -> None:
    [decision] = decide(JsEngine(rule), request())
    assert_rule_error(decision, says)


@pytest.mark.parametrize(
    "loop",
    [
        "while (true) {}",
        "for (;;) { r.host.length; }",
        # why: the interrupt must not be catchable, or `catch` would turn it into an allow.
        "try { while (true) {} } catch (e) {} true",
    ],
)
def test_infinite_loop_denies_quickly_and_the_engine_lives_on(loop: str) -> None:
    engine = JsEngine(f"if (r.host === 'loop.test') {{ {loop} }}\nr.host === 'ok.test'")
    started = time.monotonic()
    looped, after, other = decide(engine, request("loop.test"), request("ok.test"), request("x.test"))
    assert time.monotonic() - started < 1.0
    assert_rule_error(looped, "CPU budget")
    assert after.allowed
    assert not other.allowed and other.reason is Reason.RULE_DENIED


@pytest.mark.parametrize(
    "bomb",
    [
        "const a = []; while (true) a.push(new Array(100000).fill(1));",
        "let s = 'x'; while (true) s = s + s;",
    ],
)
def test_memory_bomb_denies_and_the_engine_lives_on(bomb: str) -> None:
    engine = JsEngine(f"if (r.host === 'bomb.test') {{ {bomb} }}\ntrue")
    started = time.monotonic()
    bombed, after = decide(engine, request("bomb.test"), request("ok.test"))
    assert time.monotonic() - started < 2.0
    assert_rule_error(bombed, "")
    assert bombed.message is not None and (
        "out of memory" in bombed.message or "CPU budget" in bombed.message
    )
    assert after.allowed



@pytest.mark.parametrize("thrown", ["null", "''"])
def test_an_error_without_a_message_still_says_something(thrown: str) -> None:
    [decision] = decide(JsEngine(f"throw {thrown}"), request("ok.test"))
    assert_rule_error(decision, "the rule failed without a message")


def test_a_normal_rule_is_cheap() -> None:
    # why: rules run on the proxy's event loop for every request (DESIGN: ~7 µs each).
    engine = JsEngine("r.host === 'a.test' || r.host.endsWith('.b.test')")
    started = time.monotonic()
    decisions = decide(engine, *[request("x.b.test")] * 2000)
    assert all(d.allowed for d in decisions)
    assert time.monotonic() - started < 1.0


# --- console -------------------------------------------------------------------------


def test_console_output_reaches_the_rules_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpjail.rules")
    rule = "console.log('checking', r.host, {n: 1}); console.warn('careful'); true"
    assert verdicts(rule, request("a.test")) == ["ALLOW"]
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("httpjail.rules", logging.INFO, 'console.log: checking a.test {"n":1}') in records
    assert ("httpjail.rules", logging.WARNING, "console.warn: careful") in records


def test_console_output_of_a_failing_rule_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpjail.rules")
    [decision] = decide(JsEngine("console.log('before the fall'); throw new Error('x')"), request())
    assert_rule_error(decision, "Error: x")
    assert "console.log: before the fall" in caplog.messages


# --- syntax errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "line"),
    [
        ("const a = 1;\nconst b = ;", 2),
        ("r.host === 'a'\n\n&& (", 3),
        ("}", 1),
        # why: a check that wraps the rule in a block would accept these, and every
        # request would then fail at run time instead of at startup.
        ("true } else { false", 1),
        ("true } {", 1),
        ("return true", 1),
        ("'use strict';\nwith (r) { true }", 2),
    ],
)
def test_syntax_errors_are_refused_at_load_with_the_line(code: str, line: int) -> None:
    with pytest.raises(RuleError) as e:
        JsEngine(code)
    assert f"--js: JavaScript does not compile at line {line}: SyntaxError" in str(e.value)


def test_a_hashbang_line_is_fine() -> None:
    assert verdicts("#!/usr/bin/env node\nr.host === 'a.test'", request("a.test")) == ["ALLOW"]


# --- --js-file and reloading -----------------------------------------------------------


def write_rule(path: Path, text: str | bytes) -> None:
    """Write a new version with an mtime that surely differs from the last one."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    new = max(path.stat().st_mtime_ns, old + 1_000_000_000)
    os.utime(path, ns=(new, new))


def test_js_file_reload(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpjail.rules")
    path = tmp_path / "rules.js"
    write_rule(path, "r.host === 'a.test'")
    engine = JsEngine.from_file(path)

    async def scenario() -> list[list[bool]]:
        async def check() -> list[bool]:
            return [(await engine.evaluate(request(h))).allowed for h in ("a.test", "b.test")]

        seen = [await check()]
        write_rule(path, "r.host === 'b.test'")
        await engine.reload_if_changed()
        seen.append(await check())
        write_rule(path, "r.host === \n 'c.test' &&")  # broken: keep the b.test rule
        await engine.reload_if_changed()
        seen.append(await check())
        write_rule(path, "true")
        await engine.reload_if_changed()
        seen.append(await check())
        await engine.aclose()
        return seen

    assert asyncio.run(scenario()) == [[True, False], [False, True], [False, True], [True, True]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{path}: JavaScript does not compile at line 2" in warnings[0]
    assert "keeping the previous rule" in warnings[0]
    assert caplog.messages.count(f"--js-file {path}: reloaded") == 2


def test_js_file_changes_take_effect_without_being_asked(tmp_path: Path) -> None:
    path = tmp_path / "rules.js"
    write_rule(path, "false")
    engine = JsEngine.from_file(path)

    async def scenario() -> tuple[bool, bool]:
        before = (await engine.evaluate(request())).allowed  # starts the file watcher
        write_rule(path, "true")
        deadline = time.monotonic() + 3
        while not (await engine.evaluate(request())).allowed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        after = (await engine.evaluate(request())).allowed
        await engine.aclose()
        return before, after

    assert asyncio.run(scenario()) == (False, True)


def test_a_vanished_or_garbled_file_keeps_the_rule_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.js"
    write_rule(path, "r.host === 'a.test'")
    engine = JsEngine.from_file(path)

    async def scenario() -> list[bool]:
        path.unlink()
        for _ in range(3):  # the watcher polls 5 times a second: one warning, not one each
            await engine.reload_if_changed()
        write_rule(path, b"\xff\xfe not utf-8")
        await engine.reload_if_changed()
        await engine.reload_if_changed()
        allowed = [(await engine.evaluate(request(h))).allowed for h in ("a.test", "b.test")]
        write_rule(path, "r.host === 'b.test'")
        await engine.reload_if_changed()
        allowed += [(await engine.evaluate(request(h))).allowed for h in ("a.test", "b.test")]
        await engine.aclose()
        return allowed

    assert asyncio.run(scenario()) == [True, False, False, True]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "No such file or directory" in warnings[0]
    assert "not UTF-8" in warnings[1]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: None, "No such file or directory"),
        (lambda p: p.mkdir(), "Is a directory"),
        (lambda p: p.write_bytes(b"r.host === '\xe9'"), "not UTF-8 text"),
    ],
    ids=["missing", "directory", "not-utf8"],
)
def test_unreadable_js_file_is_a_rule_error(tmp_path: Path, make, says: str) -> None:
    path = tmp_path / "rules.js"
    make(path)
    with pytest.raises(RuleError) as e:
        JsEngine.from_file(path)
    assert str(e.value).startswith(f"--js-file {path}: cannot read it: ")
    assert says in str(e.value)


def test_js_file_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.js"
    path.write_text("// allow the API\n\nr.host === 'a' ||\n")
    with pytest.raises(RuleError, match=rf"^{path}: JavaScript does not compile at line \d"):
        JsEngine.from_file(path)


# --- a rule that is one expression is compiled once; the rest keep eval's meaning -------


@pytest.mark.parametrize(("code", "expected"), [
    ("r.host === 'api.test'", "ALLOW"),
    ("r.host === 'api.test' // a comment on the last line", "ALLOW"),
    ("r.host === 'other'\n// a comment below", "DENY"),
    ("{allow: true}", "ALLOW"),  # eval: a block with a label, whose value is true
    ("var ok = r.method === 'GET'; ok", "ALLOW"),
    ("'use strict'; r.port === 443", "ALLOW"),
    ("if (r.host === 'api.test') { true } else { false }", "ALLOW"),
    ("r.headers = {a: 1}; r.headers.a === 1", "ALLOW"),
    ("r.headers['x-key'] === 'v' && Object.keys(r).length === 11", "ALLOW"),
])
def test_expressions_and_statements_mean_what_eval_gives(code: str, expected: str) -> None:
    assert verdicts(code, request(headers={"x-key": "v"})) == [expected]


def test_a_declaration_is_not_taken_for_an_expression() -> None:
    [decision] = decide(JsEngine("function f() { return true }"), request())
    assert_rule_error(decision, "null/undefined")
