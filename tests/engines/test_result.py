"""What a rule may return, and how every other value fails closed (engines/result.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from httpjail_py.engines.base import Action, Decision, Reason
from httpjail_py.engines.result import parse_result


def js(text: str) -> Any:
    """A rule result as it arrives from an engine: JSON-decoded."""
    return json.loads(text)


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ("true", Decision(action=Action.ALLOW, reason=Reason.RULE_ALLOWED)),
        ("false", Decision(action=Action.DENY, reason=Reason.RULE_DENIED)),
        ('{"allow": true}', Decision(action=Action.ALLOW, reason=Reason.RULE_ALLOWED)),
        ('{"allow": false}', Decision(action=Action.DENY, reason=Reason.RULE_DENIED)),
        (
            '{"deny_message": "x"}',
            Decision(action=Action.DENY, reason=Reason.RULE_DENIED, message="x"),
        ),
        (
            '{"allow": false, "deny_message": "x"}',
            Decision(action=Action.DENY, reason=Reason.RULE_DENIED, message="x"),
        ),
        (
            '{"allow": {"max_tx_bytes": 1024}}',
            Decision(action=Action.ALLOW, reason=Reason.RULE_ALLOWED, max_tx_bytes=1024),
        ),
        (
            '{"allow": {"max_tx_bytes": 0}}',
            Decision(action=Action.ALLOW, reason=Reason.RULE_ALLOWED, max_tx_bytes=0),
        ),
        # JS numbers are doubles: 2.0 is the whole number 2.
        (
            '{"allow": {"max_tx_bytes": 2.0}}',
            Decision(action=Action.ALLOW, reason=Reason.RULE_ALLOWED, max_tx_bytes=2),
        ),
        (
            '{"deny_message": ""}',
            Decision(action=Action.DENY, reason=Reason.RULE_DENIED, message=""),
        ),
    ],
)
def test_accepted_results(result: str, expected: Decision) -> None:
    decision = parse_result(js(result))
    assert decision == expected
    assert decision.allowed is (expected.action is Action.ALLOW)


@pytest.mark.parametrize(
    ("result", "says"),
    [
        ("{}", "neither 'allow' nor 'deny_message' (keys: none)"),
        ('{"allwo": true}', "neither 'allow' nor 'deny_message' (keys: allwo)"),
        ("42", "rule returned number 42"),
        ('"yes"', "rule returned string 'yes'"),
        ("null", "rule returned null/undefined"),
        ("[]", "rule returned an array"),
        ("[true]", "rule returned an array"),
        ('{"allow": "yes"}', "'allow' is string 'yes'"),
        ('{"allow": 1}', "'allow' is number 1"),
        ('{"allow": null}', "'allow' is null/undefined"),
        ('{"allow": {}}', "must be {max_tx_bytes: N}"),
        ('{"allow": {"max_tx_bytes": -1}}', "max_tx_bytes must be a whole number >= 0, got -1"),
        ('{"allow": {"max_tx_bytes": 1.5}}', "max_tx_bytes must be a whole number >= 0, got 1.5"),
        ('{"allow": {"max_tx_bytes": true}}', "must be {max_tx_bytes: N}"),
        ('{"allow": {"max_tx_bytes": "10"}}', "must be {max_tx_bytes: N}"),
        ('{"allow": {"max_tx_bytes": 10, "x": 1}}', "must be {max_tx_bytes: N}"),
        ('{"deny_message": 5}', "'deny_message' is number 5, not a string"),
        ('{"deny_message": null}', "'deny_message' is null/undefined, not a string"),
        ('{"allow": false, "deny_message": 5}', "'deny_message' is number 5, not a string"),
        ('{"allow": true, "deny_message": "x"}', "allows and gives a 'deny_message'"),
        (
            '{"allow": {"max_tx_bytes": 5}, "deny_message": "x"}',
            "allows and gives a 'deny_message'",
        ),
    ],
)
def test_malformed_results_deny_as_rule_errors(result: str, says: str) -> None:
    decision = parse_result(js(result))
    assert decision.action is Action.DENY
    assert not decision.allowed
    assert decision.reason is Reason.RULE_ERROR
    assert decision.max_tx_bytes is None
    assert decision.message is not None and says in decision.message


def test_long_string_results_are_cut_in_the_message() -> None:
    decision = parse_result("y" * 5000)
    assert decision.reason is Reason.RULE_ERROR
    assert decision.message is not None and len(decision.message) < 200


@pytest.mark.parametrize("limit", [float("inf"), float("nan")])
def test_non_finite_max_tx_bytes_denies(limit: float) -> None:
    # Python callers (not JSON, which has no inf/nan) could pass these; int(inf) would raise.
    decision = parse_result({"allow": {"max_tx_bytes": limit}})
    assert decision.reason is Reason.RULE_ERROR and not decision.allowed
