"""The decision on one request: the rule on the name, then the destination policy on the
addresses the name resolves to, then the rule again with the address when it reads it.

The name is resolved only after the rule allowed it: a name no rule allows never reaches
a DNS server, so a jailed program cannot carry data out in the names it asks for.
"""

from __future__ import annotations

import dataclasses
import logging

from httpjail_py.engines.base import Decision, Reason, RequestInfo, RuleEngine
from httpjail_py.proxy.resolver import UpstreamResolver

__all__ = ["decide", "evaluate"]

log = logging.getLogger("httpjail.proxy")


async def evaluate(engine: RuleEngine, info: RequestInfo) -> Decision:
    """The rule's decision, with a message on every refusal; an engine that raises denies."""
    try:
        decision = await engine.evaluate(info)
    except Exception as e:  # the interface says never; if it does, deny and say so
        log.exception("rule engine %s crashed", engine.name)
        decision = Decision.error(f"rule engine crashed: {type(e).__name__}: {e}")
    if not decision.allowed and decision.message is None:
        # A bare `false`: still say which rule refused what, in the 403 and the logs.
        message = f"the {engine.name} rule denied {info.method} {info.host}"
        decision = dataclasses.replace(decision, message=message)
    return decision


async def decide(
    engine: RuleEngine, resolver: UpstreamResolver, info: RequestInfo
) -> tuple[Decision, RequestInfo, str]:
    """Returns the decision, the request as the rule last saw it (with `ip` once it is
    known), and who decided: the engine's name, or `httpjail` for the policy."""
    decision = await evaluate(engine, info)
    if not decision.allowed:
        return decision, info, engine.name
    lookup = await resolver.lookup(info.host, info.port)
    if lookup.refusal is not None:
        return Decision.deny(lookup.problem(), Reason.DESTINATION_PRIVATE), info, "httpjail"
    if lookup.error is not None:
        return Decision.deny(lookup.problem(), Reason.UPSTREAM_ERROR), info, "httpjail"
    info = dataclasses.replace(info, ip=lookup.addresses[0])
    if engine.reads_address:
        # Both must allow: the second answer stands (its max_tx_bytes, its message).
        decision = await evaluate(engine, info)
    return decision, info, engine.name
