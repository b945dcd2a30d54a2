"""Build the rule engine a `RuleSource` names."""

from __future__ import annotations

from httpjail_py.config import Config
from httpjail_py.engines.base import RuleEngine
from httpjail_py.engines.js import JsEngine
from httpjail_py.engines.proc import DEFAULT_TIMEOUT as PROC_TIMEOUT
from httpjail_py.engines.proc import ProcEngine
from httpjail_py.engines.shell import DEFAULT_TIMEOUT as SH_TIMEOUT
from httpjail_py.engines.shell import ShellEngine

__all__ = ["build_engine"]


def build_engine(config: Config) -> RuleEngine:
    """Raises RuleError when the rule cannot be loaded or does not compile."""
    rule = config.rule
    if rule.kind == "js-file":
        assert rule.path is not None
        return JsEngine.from_file(rule.path, time_limit=config.js_time_limit)
    if rule.kind == "js":
        return JsEngine(rule.text, time_limit=config.js_time_limit)
    if rule.kind == "sh":
        return ShellEngine(rule.text, timeout=config.rule_timeout or SH_TIMEOUT)
    if rule.kind == "proc":
        return ProcEngine(rule.text, timeout=config.rule_timeout or PROC_TIMEOUT)
    # No rule flag: deny everything, as httpjail does.
    return JsEngine("false", time_limit=config.js_time_limit)
