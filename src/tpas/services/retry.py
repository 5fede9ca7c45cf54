"""The retry schedule for downlinks: exponential backoff with jitter, as pure arithmetic.

``delay(attempt, jitter)`` is a function of its arguments only (the dispatcher supplies
``jitter`` from its random source), so tests can pin it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """``base * 2**(attempt-1)``, capped at ``cap``, scaled into ``[1/2, 1)`` by jitter.

    Half-jitter keeps retries of many downlinks that failed together apart, while never
    retrying sooner than half the nominal delay.
    """

    base: float = 2.0
    cap: float = 300.0

    def delay(self, attempt: int, jitter: float) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based);
        ``jitter`` is in ``[0, 1)``."""
        nominal = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        return nominal * (0.5 + 0.5 * jitter)
