"""Per-jail limits of a shared egress proxy: requests in flight (503 past the cap) and
requests per second with a burst (429 past it).

Both are counted per jail, so one runaway jail cannot starve another, and both apply
before the rule runs, so a flood does not reach a slow rule engine either.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from httpjail_py.engines.base import Decision, Reason

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "JailLimits", "RateLimit", "parse_rate"]

# Generous: it protects the host (file descriptors, memory), not anyone's traffic.
DEFAULT_MAX_IN_FLIGHT = 1000


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float
    burst: int


def parse_rate(text: str) -> RateLimit:
    """`--rate`'s argument: `N` (N requests per second, bursts of N) or `N:BURST`.
    Raises ValueError."""
    rate_text, _, burst_text = text.partition(":")
    try:
        per_second = float(rate_text)
        burst = int(burst_text) if burst_text else 0
    except ValueError:
        raise ValueError(f"{text!r} is not RATE or RATE:BURST (e.g. 10 or 10:50)") from None
    if not 0 < per_second < float("inf") or (burst_text and burst < 1):
        raise ValueError(f"{text!r}: the rate must be a positive number and the burst at least 1")
    burst = burst or max(1, int(per_second))
    return RateLimit(per_second, burst)


class _Bucket:
    """A token bucket: `burst` tokens, refilled at `per_second`."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.updated = now

    def take(self, now: float) -> float:
        """Takes a token. Returns 0, or the seconds until one is available (none taken)."""
        self.tokens = min(self.limit.burst, self.tokens + (now - self.updated) * self.limit.per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.limit.per_second


class JailLimits:
    def __init__(self, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, rate: RateLimit | None = None) -> None:
        self.max_in_flight = max_in_flight
        self.rate = rate
        self._in_flight: Counter[str] = Counter()
        self._buckets: dict[str, _Bucket] = {}

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
            now = time.monotonic()
            bucket = self._buckets.get(jail) or self._buckets.setdefault(jail, _Bucket(self.rate, now))
            wait = bucket.take(now)
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
