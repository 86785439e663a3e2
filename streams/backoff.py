"""Exponential backoff with full jitter."""

from __future__ import annotations

import random


def full_jitter(
    attempt: int, base: float = 0.1, cap: float = 10.0, rng: random.Random | None = None
) -> float:
    """A delay in ``[0, min(cap, base * 2**attempt))`` seconds."""
    upper = min(cap, base * (2**attempt))
    return (rng or random).uniform(0, upper)
