"""Build the rule engine a `RuleSource` names."""

from __future__ import annotations

from httpjail_py.config import Config
from httpjail_py.engines.base import RuleEngine
from httpjail_py.engines.js import JsEngine

__all__ = ["build_engine"]


def build_engine(config: Config) -> RuleEngine:
    """Raises RuleError when the rule cannot be loaded or does not compile."""
    rule = config.rule
    if rule.kind == "js-file":
        assert rule.path is not None
        return JsEngine.from_file(rule.path, time_limit=config.js_time_limit)
    if rule.kind == "js":
        return JsEngine(rule.text, time_limit=config.js_time_limit)
    # No rule flag: deny everything, as httpjail does.
    return JsEngine("false", time_limit=config.js_time_limit)
