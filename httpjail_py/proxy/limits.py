"""Per-jail limits of a shared egress proxy: requests in flight (503 past the cap) and
requests per second with a burst (429 past it).

Both are counted per jail, so one runaway jail cannot starve another, and both apply
before the rule runs, so a flood does not reach a slow rule engine either.
"""

from __future__ import annotations

from collections import Counter

from httpjail_py.config import DEFAULT_MAX_IN_FLIGHT
from httpjail_py.engines.base import Decision, Reason
from httpjail_py.ratelimit import RateLimit, TokenBucket

__all__ = ["JailLimits"]

class JailLimits:
    def __init__(self, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, rate: RateLimit | None = None) -> None:
        self.max_in_flight = max_in_flight
        self.rate = rate
        self._in_flight: Counter[str] = Counter()
        self._buckets: dict[str, TokenBucket] = {}

    def admit(self, jail: str) -> Decision | None:
        """Count one more request of `jail` in flight, or say why it is refused (then it
        is not counted). Every admitted request must be `release`d once."""
        if self._in_flight[jail] >= self.max_in_flight:
            return Decision.deny(
                f"{self.max_in_flight} requests of this jail are already in flight "
                "(--max-connections)",
                Reason.CONNECTION_LIMIT,
            )
        if self.rate is not None:
            bucket = self._buckets.get(jail) or self._buckets.setdefault(jail, TokenBucket(self.rate))
            wait = bucket.take()
            if wait:
                return Decision.deny(
                    f"over the rate of {self.rate.per_second:g} requests per second "
                    f"(bursts of {self.rate.burst}, --rate); retry in {wait:.2f} s",
                    Reason.RATE_LIMIT,
                )
        self._in_flight[jail] += 1
        return None

    def release(self, jail: str) -> None:
        self._in_flight[jail] -= 1
        if self._in_flight[jail] <= 0:
            del self._in_flight[jail]

    def in_flight(self, jail: str) -> int:
        return self._in_flight[jail]
