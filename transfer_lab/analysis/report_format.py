"""Numbers and tables as the reports print them."""

from __future__ import annotations

import math

import numpy as np


def fmt(x, digits: int = 3) -> str:
    """3 significant digits (integers whole); '—' for a missing or non-finite value."""
    if x is None or (isinstance(x, (float, np.floating)) and not math.isfinite(x)):
        return "—"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{digits}g}"


def md_table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in r) + " |")
    return out + [""]
