"""Rule engines: each turns a `RequestInfo` into a `Decision`, failing closed."""

from httpjail_py.engines.base import Action, Decision, RequestInfo, RuleEngine
from httpjail_py.engines.result import parse_result

__all__ = ["Action", "Decision", "RequestInfo", "RuleEngine", "parse_result"]
