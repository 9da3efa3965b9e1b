"""The two rules every interval in the analysis obeys, each written once.

  interval(samples, ci)  the percentile interval of bootstrap draws (non-finite draws left out)
  identified(lo, hi)     an exponent is identified when its interval excludes 0 and is at most
                         MAX_WIDTH wide: narrower than that, its sign and its size are both read
"""

from __future__ import annotations

import numpy as np

MAX_WIDTH = 0.5


def interval(samples, ci: float) -> tuple[float, float]:
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if not len(s):
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100])
    return float(lo), float(hi)


def identified(lo: float, hi: float) -> bool:
    return bool(np.isfinite(lo) and np.isfinite(hi) and not lo <= 0 <= hi and hi - lo <= MAX_WIDTH)


def why_not_identified(lo: float, hi: float) -> str:
    """'covers 0' or 'is wider than 0.5' (or 'is not finite'); '' where identified."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "is not finite"
    if lo <= 0 <= hi:
        return "covers 0"
    return f"is wider than {MAX_WIDTH:g}" if hi - lo > MAX_WIDTH else ""
