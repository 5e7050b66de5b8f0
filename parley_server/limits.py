"""Token buckets: a burst allowed at once, then a steady rate."""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """One bucket per key. allow(key) says whether one more action fits, and if not, when."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic, max_keys: int = 100_000):
        self.rate, self.burst, self.clock, self.max_keys = rate, float(burst), clock, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        """0.0 if allowed (and counted); otherwise the seconds until one more would be."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.max_keys:  # forget full buckets: they are the default
                self._buckets = {k: v for k, v in self._buckets.items()
                                 if v[0] + (now - v[1]) * self.rate < self.burst}
            return (1.0 - tokens) / self.rate
