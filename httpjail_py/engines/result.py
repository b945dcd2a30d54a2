"""One parser for what a rule returns, shared by every engine so they agree.

Accepted (as in httpjail): `true`, `false`, `{allow: bool}`, `{deny_message: str}`,
`{allow: false, deny_message: str}`, `{allow: {max_tx_bytes: N}}`.
Unlike httpjail, anything else denies, including `{}` and typos such as `{allwo: true}`,
which httpjail allows (failing open).
"""

from __future__ import annotations

import json
import math
from typing import Any

from httpjail_py.engines.base import Decision

__all__ = ["parse_result", "parse_answer_line"]

# Longest deny message we pass on from a script or process (the 403 body, the logs).
MAX_MESSAGE = 4096


def _describe(value: Any) -> str:
    if value is None:
        return "null/undefined"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value[:60]!r}"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def parse_result(value: Any) -> Decision:
    """Turn a rule's result (already decoded to Python values) into a Decision."""
    if value is True:
        return Decision.allow()
    if value is False:
        return Decision.deny()
    if not isinstance(value, dict):
        return Decision.error(
            f"rule returned {_describe(value)}; expected true, false or an object "
            "with 'allow' or 'deny_message'"
        )
    message = value.get("deny_message")
    if "deny_message" in value and not isinstance(message, str):
        return Decision.error(f"rule result 'deny_message' is {_describe(message)}, not a string")
    if "allow" not in value:
        if message is not None:
            return Decision.deny(message)
        keys = ", ".join(sorted(map(str, value))) or "none"
        return Decision.error(
            f"rule result object has neither 'allow' nor 'deny_message' (keys: {keys})"
        )
    allow = value["allow"]
    if allow is False:
        return Decision.deny(message)
    if message is not None:
        return Decision.error("rule result allows and gives a 'deny_message'; refusing to guess")
    if allow is True:
        return Decision.allow()
    if isinstance(allow, dict):
        limit = allow.get("max_tx_bytes")
        extra = set(allow) - {"max_tx_bytes"}
        if extra or isinstance(limit, bool) or not isinstance(limit, int | float):
            return Decision.error(
                "rule result 'allow' object must be {max_tx_bytes: N} with N a whole number"
            )
        if not math.isfinite(limit) or limit < 0 or limit != int(limit):
            return Decision.error(f"max_tx_bytes must be a whole number >= 0, got {limit!r}")
        return Decision.allow(max_tx_bytes=int(limit))
    return Decision.error(
        f"rule result 'allow' is {_describe(allow)}; expected true, false or {{max_tx_bytes: N}}"
    )


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_or_null(text: str) -> float | None:
    # 1e999 is valid JSON but no number; JS would hand it over as null (JSON.stringify).
    value = float(text)
    return value if math.isfinite(value) else None


# One decoder for every answer: `json.loads` with options builds a new one per call.
_ANSWER_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite_or_null)


def parse_answer_line(line: str) -> Decision:
    """A rule process's answer line, read exactly as a JS rule's result would be.

    A line that is JSON is that value, judged by `parse_result` like a JS rule returning
    it: `true`, `false` or an object decide; `42`, `null`, `"text"` or `[...]` deny as rule
    errors, as they do from JS. A line that starts with `{` but is not JSON is a rule
    error too. Any other text denies with that text (trimmed) as the message.
    """
    text = line.strip()
    if text == "true":  # the common answers, without the JSON decoder
        return Decision.allow()
    if text == "false":
        return Decision.deny()
    if not text:
        return Decision.error("rule process answered an empty line")
    try:
        value = _ANSWER_DECODER.decode(text)
    except ValueError as e:
        if text.startswith("{"):
            return Decision.error(
                f"rule process answered malformed JSON ({getattr(e, 'msg', e)}): {text[:200]!r}"
            )
        return Decision.deny(text[:MAX_MESSAGE])
    return parse_result(value)
