"""A token bucket, and `--rate`'s value: the proxy's per-jail request rate and the DNS
sinkhole's query rate both use it."""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["RateLimit", "TokenBucket", "parse_rate"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float
    burst: int

    @classmethod
    def steady(cls, per_second: float) -> RateLimit:
        """`per_second`, in bursts of one second's worth."""
        return cls(per_second, max(1, int(per_second)))


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
    return RateLimit(per_second, burst) if burst else RateLimit.steady(per_second)


class TokenBucket:
    """`limit.burst` tokens, refilled at `limit.per_second`; starts full."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._updated = time.monotonic()

    def take(self) -> float:
        """Takes a token. Returns 0, or the seconds until one is available (none taken)."""
        now = time.monotonic()
        self._tokens = min(self.limit.burst, self._tokens + (now - self._updated) * self.limit.per_second)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.limit.per_second
