"""Numbers, intervals and tables as the reports print them, and the Markdown → HTML of the reports."""

from __future__ import annotations

import base64
import html as htmllib
import math
import re
from pathlib import Path

import numpy as np


def fmt(x, digits: int = 3) -> str:
    """3 significant digits (integers whole); '—' for a missing or non-finite value."""
    if x is None or (isinstance(x, (float, np.floating)) and not math.isfinite(x)):
        return "—"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{digits}g}"


def fmt_size(n: float) -> str:
    """A model size as researchers say it: 76832 → 76.8k, 3.4e6 → 3.4M."""
    return f"{n / 1e3:.3g}k" if n < 1e6 else f"{n / 1e6:.3g}M"


def fmt_chars(d: float) -> str:
    """A data size the way the grids are written: 1e4, 3e4 (one significant digit)."""
    mantissa, exponent = f"{d:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_interval(interval, digits: int = 3, missing: str | None = None, pct: bool = False) -> str:
    """[lo, hi] of an interval, each with `digits` significant digits (pct: as whole percentages);
    `missing` in place of an interval that is absent or not finite (None: print its '—' ends)."""
    if missing is not None and (interval is None or not all(np.isfinite(interval))):
        return missing
    lo, hi = interval
    return f"[{lo:.0%}, {hi:.0%}]" if pct else f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"


def md_table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in r) + " |")
    return out + [""]


def markdown_to_html(md: str, base: Path) -> str:
    """Just enough Markdown (headings, lists, tables, images, code) for this report; images inlined."""
    out, in_list, in_table = [], False, False

    def inline(s):
        s = htmllib.escape(s)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)

    for line in md.splitlines() + [""]:
        if in_list and not line.startswith("- "):
            out.append("</ul>")
            in_list = False
        if in_table and not line.startswith("|"):
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{inline(line[2:])}</li>")
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{inline(c)}</{tag}>" for c in cells) + "</tr>")
        elif m := re.match(r"!\[(.*)\]\((.*)\)", line):
            data = base64.b64encode((base / m.group(2)).read_bytes()).decode()
            out.append(f'<p><img alt="{htmllib.escape(m.group(1))}" src="data:image/png;base64,{data}" '
                       f'style="max-width:100%"></p>')
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{''.join(out)}</body></html>"
