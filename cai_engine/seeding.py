"""Seeded randomness that depends only on what it is for, never on call order."""

from __future__ import annotations

import hashlib
import random


def seeded_rng(*parts) -> random.Random:
    """A `random.Random` seeded by the sha256 of `parts` joined with ':'.

    The same parts give the same draws in every process and on every resume, so a choice made
    for (seed, prompt, sample) is stable however the work is batched or restarted.
    """
    key = ":".join(str(p) for p in parts)
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
