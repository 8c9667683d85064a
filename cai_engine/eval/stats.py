"""Intervals for eval numbers: Wilson for shares of hard verdicts, a seeded percentile
bootstrap for means. Every number carries its n.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

Z95 = 1.959963984540054  # two-sided 95%


@dataclass(frozen=True)
class Rate:
    k: float  # successes (may be fractional: a sum of soft preferences)
    n: int
    value: float | None
    low: float | None
    high: float | None

    def text(self) -> str:
        if self.value is None:
            return f"– (n = {self.n})"
        return f"{self.value:.1%} [{self.low:.1%}, {self.high:.1%}] (n = {self.n})"


def wilson(k: float, n: int, z: float = Z95) -> Rate:
    """The rate k/n with its Wilson score interval; n = 0 gives no value."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(k, n, None, None, None)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 (k = n) the bound is exactly 0 (1); rounding would leave it a hair off.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Rate(k, n, p, low, high)


def bootstrap_ci(
    values: list[float], *, rounds: int = 2000, level: float = 0.95, seed: int = 0
) -> Rate:
    """The mean of `values` with a seeded percentile-bootstrap interval."""
    n = len(values)
    if n == 0:
        return Rate(0.0, 0, None, None, None)
    mean = sum(values) / n
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(rounds))
    tail = (1 - level) / 2
    low = means[int(math.floor(tail * (rounds - 1)))]
    high = means[int(math.ceil((1 - tail) * (rounds - 1)))]
    return Rate(sum(values), n, mean, low, high)
