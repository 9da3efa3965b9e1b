"""Numbers quoted in prose, against the committed results they come from.

A README's figure passes when it matches, at the precision it is printed with, a value in its study's
committed results: the numbers of fits.json, every CSV beside it, and the reports the committed code
generated from them (report.md, mix.md, atlas.md, compare.md, verify.md, coverage.md). A figure that is
a setting of the study (a grid value, a budget), not a measurement, is listed in SETTINGS with its
README. Anything else is a figure that drifted, or one that was never measured: the test names it.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

NUMBER = re.compile(r"(?<![\w.\-/#])([-−]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?)(%|×)?(?![\w])")
RESULT_FILES = ("*.json", "*.csv", "*.md")


@dataclass(frozen=True)
class Figure:
    text: str
    value: float
    places: float  # half a unit of the last printed digit (the rounding a match allows)
    percent: bool
    line: int


def prose(markdown: str) -> list[tuple[int, str]]:
    """(line number, text) of a README's prose: code blocks, inline code, link targets, HTML comments,
    headings and table header/separator rows left out."""
    out, fenced = [], False
    for i, line in enumerate(markdown.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("#"):
            continue
        line = re.sub(r"`[^`]*`", " ", line)
        line = re.sub(r"\]\([^)]*\)", "]", line)
        line = re.sub(r"<!--.*?-->", " ", line)
        out.append((i, line))
    return out


def _half_unit(text: str) -> float:
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (-decimals) * 10.0 ** (int(exponent) if exponent else 0)


def figures(markdown: str) -> list[Figure]:
    """Every number of two or more significant figures in the prose (single digits are counts and
    ordinals: '3 sizes', 'step 2')."""
    out = []
    for i, line in prose(markdown):
        for match in NUMBER.finditer(line):
            raw, unit = match.group(1).replace("−", "-").replace(",", ""), match.group(2) or ""
            digits = re.sub(r"[^0-9]", "", raw.lower().split("e")[0]).lstrip("0")
            if len(digits) < 2 and not unit:
                continue
            out.append(Figure(match.group(0), float(raw), _half_unit(raw), unit == "%", i))
    return out


def _numbers_in(path: Path) -> list[float]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        values: list[float] = []

        def walk(node):
            if isinstance(node, bool):
                return
            if isinstance(node, (int, float)):
                values.append(float(node))
            elif isinstance(node, dict):
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
            elif isinstance(node, str):
                values.extend(float(m.group(1).replace(",", "")) for m in NUMBER.finditer(node))
        walk(json.loads(text))
        return values
    if path.suffix == ".csv":
        values = []
        for row in csv.reader(text.splitlines()):
            for cell in row:
                try:
                    values.append(float(cell))
                except ValueError:
                    values.extend(float(m.group(1).replace(",", "")) for m in NUMBER.finditer(cell))
        return values
    return [float(m.group(1).replace("−", "-").replace(",", "")) for m in NUMBER.finditer(text)]


def result_values(folders: list[Path], exclude: Path) -> list[float]:
    """Every number of the committed results under `folders` (the README itself left out)."""
    values = []
    for folder in folders:
        for pattern in RESULT_FILES:
            for path in folder.rglob(pattern):
                if path.resolve() != exclude.resolve() and path.name != "README.md":
                    values += _numbers_in(path)
    return [v for v in values if math.isfinite(v)]


def matches(fig: Figure, values: list[float]) -> bool:
    scale = 100.0 if fig.percent else 1.0
    tolerance = fig.places * (1 + 1e-9)
    for v in values:
        for candidate in (v * scale, v):  # a share printed as 45% may be stored as 0.45 or as 45
            if abs(candidate - fig.value) <= tolerance:
                return True
    return False
