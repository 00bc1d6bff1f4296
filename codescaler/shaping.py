"""Validity-preserving reward shaping (SPEC.md).

reward = softplus(rm_score) when there is code, else 0.0, so any valid code
outranks no code whatever the RM says. `mode="none"` keeps the raw score.
"""

from __future__ import annotations

import math

MODES = ("softplus", "none")


def softplus(x: float) -> float:
    """log(1 + e^x), computed without overflow for large |x|."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def shape(rm_score: float | None, has_code: bool, mode: str = "softplus") -> float:
    """The reward for one response."""
    if mode not in MODES:
        raise ValueError(f"unknown shaping {mode!r}; use one of {MODES}")
    if not has_code or rm_score is None:
        return 0.0
    return softplus(float(rm_score)) if mode == "softplus" else float(rm_score)
