"""The JS, proc and sh engines give the same decision for the same answer.

One table: each row is an answer as a `--proc` filter would print it; the JS rule is
that same text as an expression (where it is one: plain text is not); the sh form is an
exit status and stdout, where the answer can be said that way (allow, or deny with a
message). Every engine that can express a row must produce the row's decision, field for
field (allowed, reason, message, max_tx_bytes), and so the same as each other.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from httpjail_py.engines.base import Action, Decision, Reason, RequestInfo
from httpjail_py.engines.js import JsEngine
from httpjail_py.engines.proc import ProcEngine
from httpjail_py.engines.result import MAX_MESSAGE
from httpjail_py.engines.shell import ShellEngine

FILTER = Path(__file__).parent / "scripts" / "filter.py"
NOT_A_RESULT = "expected true, false or an object with 'allow' or 'deny_message'"


@dataclass(frozen=True)
class Case:
    id: str
    answer: str  # the --proc answer line
    expected: Decision | tuple[Reason, str]  # a Decision, or a rule error saying this
    js: bool = True  # the answer is also a JS expression
    sh: tuple[int, str] | None = None  # (exit status, stdout) saying the same


def deny(message: str | None = None) -> Decision:
    return Decision(action=Action.DENY, reason=Reason.RULE_DENIED, message=message)


def error(says: str) -> tuple[Reason, str]:
    return (Reason.RULE_ERROR, says)


LONG = "x" * (MAX_MESSAGE + 500)

CASES = [
    Case("true", "true", Decision.allow(), sh=(0, "")),
    Case("false", "false", deny(), sh=(1, "")),
    Case("true-padded", "  true\t", Decision.allow(), sh=(0, "ignored\n")),
    Case("allow-true", '{"allow": true}', Decision.allow(), sh=(0, "")),
    Case("allow-false", '{"allow": false}', deny(), sh=(1, "")),
    Case("deny-message", '{"deny_message": "blocked by policy"}', deny("blocked by policy"),
         sh=(1, "blocked by policy\n")),
    Case("allow-false-message", '{"allow": false, "deny_message": "no"}', deny("no"), sh=(1, "no")),
    Case("unicode-message", '{"deny_message": "nope \\u270b é"}', deny("nope ✋ é"),
         sh=(1, "nope ✋ é\n")),
    Case("message-padded", '{"deny_message": "  kept as given  "}', deny("  kept as given  ")),
    Case("empty-message", '{"deny_message": ""}', deny("")),
    Case("max-tx-bytes", '{"allow": {"max_tx_bytes": 1024}}', Decision.allow(max_tx_bytes=1024)),
    Case("max-tx-bytes-zero", '{"allow": {"max_tx_bytes": 0}}', Decision.allow(max_tx_bytes=0)),
    Case("max-tx-bytes-float", '{"allow": {"max_tx_bytes": 2.0}}', Decision.allow(max_tx_bytes=2)),
    Case("empty-object", "{}", error("neither 'allow' nor 'deny_message' (keys: none)")),
    Case("typo", '{"allwo": true}', error("neither 'allow' nor 'deny_message' (keys: allwo)")),
    Case("allow-string", '{"allow": "yes"}', error("'allow' is string 'yes'")),
    Case("allow-and-message", '{"allow": true, "deny_message": "x"}',
         error("allows and gives a 'deny_message'")),
    Case("negative-limit", '{"allow": {"max_tx_bytes": -1}}', error("whole number >= 0, got -1")),
    Case("infinite-limit", '{"allow": {"max_tx_bytes": 1e999}}', error("must be {max_tx_bytes: N}")),
    Case("message-not-string", '{"deny_message": 5}', error("'deny_message' is number 5")),
    Case("number", "42", error(f"rule returned number 42; {NOT_A_RESULT}")),
    Case("null", "null", error("rule returned null/undefined")),
    Case("json-string", '"blocked"', error("rule returned string 'blocked'")),
    Case("array", "[true]", error("rule returned an array")),
    # Plain text is the line processor's deny message; JS has no such form.
    Case("text", "not on the allow list", deny("not on the allow list"), js=False,
         sh=(1, "not on the allow list\n")),
    Case("text-padded", "   spaced out \t", deny("spaced out"), js=False, sh=(1, "   spaced out \t\n")),
    Case("text-long", LONG, deny(LONG[:MAX_MESSAGE]), js=False, sh=(1, LONG)),
    Case("text-like-json", "NaN", deny("NaN"), js=False, sh=(1, "NaN")),
    Case("malformed-json", '{"allow": tru', error("rule process answered malformed JSON"), js=False),
]


def request(path: str) -> RequestInfo:
    return RequestInfo(method="GET", scheme="https", host="api.test", port=443, path=path)


def sh_script(exit_status: int, stdout: str) -> str:
    return f"printf '%s' {shlex.quote(stdout)}; exit {exit_status}"


def decisions_by_engine(tmp_path: Path) -> dict[str, dict[str, Decision]]:
    """Every case through every engine that can express it: {engine: {case id: Decision}}."""
    table = tmp_path / "answers.json"
    table.write_text(json.dumps({f"/{case.id}": case.answer for case in CASES}))
    command = shlex.join([sys.executable, "-u", str(FILTER), "--table", str(table)])

    async def run() -> dict[str, dict[str, Decision]]:
        out: dict[str, dict[str, Decision]] = {"js": {}, "proc": {}, "sh": {}}
        proc = ProcEngine(command, timeout=5)
        try:
            for case in CASES:
                out["proc"][case.id] = await proc.evaluate(request(f"/{case.id}"))
        finally:
            await proc.aclose()
        for case in CASES:
            if case.js:
                js = JsEngine(f"({case.answer})")
                out["js"][case.id] = await js.evaluate(request(f"/{case.id}"))
                await js.aclose()
        sh_cases = [case for case in CASES if case.sh is not None]
        decided = await asyncio.gather(*(
            ShellEngine(sh_script(*case.sh)).evaluate(request(f"/{case.id}"))  # type: ignore[misc]
            for case in sh_cases
        ))
        out["sh"] = {case.id: d for case, d in zip(sh_cases, decided, strict=True)}
        return out

    return asyncio.run(run())


@pytest.fixture(scope="module")
def by_engine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Decision]]:
    return decisions_by_engine(tmp_path_factory.mktemp("parity"))


def test_every_engine_covers_the_table(by_engine: dict[str, dict[str, Decision]]) -> None:
    assert len(by_engine["proc"]) == len(CASES)
    assert len(by_engine["js"]) == sum(case.js for case in CASES) >= 20
    assert len(by_engine["sh"]) == sum(case.sh is not None for case in CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_same_answer_same_decision(case: Case, by_engine: dict[str, dict[str, Decision]]) -> None:
    got = {engine: decisions[case.id] for engine, decisions in by_engine.items() if case.id in decisions}
    for engine, decision in got.items():
        if isinstance(case.expected, Decision):
            assert decision == case.expected, engine
        else:
            reason, says = case.expected
            assert (decision.action, decision.reason, decision.max_tx_bytes) == (
                Action.DENY, reason, None,
            ), engine
            assert decision.message is not None and says in decision.message, (engine, decision)
    # The rule errors' wording too: one parser, one message.
    assert len({(d.allowed, d.reason, d.message, d.max_tx_bytes) for d in got.values()}) == 1, got
