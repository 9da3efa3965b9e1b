"""compare.md and compare.csv of a Comparison (studies/compare.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transfer_lab.analysis.report import staging
from transfer_lab.analysis.report.markdown import md_table
from transfer_lab.analysis.studies.compare import Comparison


def _health(c: Comparison) -> list[str]:
    lines = ["## Health", "", "Target runs (scratch and fine-tuned) that finished; 'at the step cap': ended at "
             "max_steps rather than by early stopping; 'not converged': the run's own verdict (cap or best point "
             "inside warm-up); 'rises with data': curve points above a smaller D's loss beyond the tolerance "
             f"(floor {c.tolerance:.1%}).", ""]
    lines += md_table(["sweep", "target runs", "at the step cap", "not converged", "rises with data", "train hours"],
                      c.health)
    for name, found in c.rising.items():
        lines += [f"- `{name}`: {v}" for v in found]
    return lines + ([""] if any(c.rising.values()) else [])


def _cell_rows(c: Comparison) -> list[list]:
    rows = []
    for key, vals in c.wide.iterrows():
        (regime, source, target, budget, n, d), seed = key[:6], key[6:]
        ok = c.valid.loc[key]
        best = np.nanmin(ok.to_numpy(float)) if c.by and ok.notna().any() else None
        cells = []
        for group, v in vals.items():
            text = ("**%.4f**" if best is not None and ok[group] == best else "%.4f") % v if np.isfinite(v) else "—"
            cells.append(text + ("†" if (*key, group) in c.unconverged.index else ""))
        rows.append([regime, *([source, target] if c.pairs else []), *([budget] if c.budgets else []), f"{n:.3g}",
                     f"{d:.3g}", *([f"{seed[0]:g}"] if c.seeds else []), *cells])
    return rows


def _summary(c: Comparison) -> list[str]:
    if c.by:
        wins = c.valid.dropna(how="all").idxmin(axis=1).value_counts()
        return [f"Lowest loss, among the {len(c.wide)} cells measured at two or more values, cells per value: "
                + ", ".join(f"{g}: {wins.get(g, 0)}" for g in c.groups) + f"; {c.single} cells with one value left out."]
    if len(c.groups) != 2:
        return []
    a, b = c.groups
    both = c.wide.dropna()
    rel = both[b] / both[a] - 1
    lines = [f"`{b}` against `{a}` on the {len(both)} cells both have: median {rel.median():+.2%}, "
             f"lower in {int((rel < 0).sum())}, higher in {int((rel > 0).sum())}."]
    for regime, part in rel.groupby(level="regime"):
        q = part.quantile([0.1, 0.5, 0.9])
        where = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in part.idxmax())
        lines.append(f"- {regime}, {len(part)} cells: 10th / 50th / 90th percentile {q[0.1]:+.2%} / {q[0.5]:+.2%} / "
                     f"{q[0.9]:+.2%}; higher by more than 0.5% in {int((part > 0.005).sum())}, "
                     f"largest {part.max():+.2%} ({where}).")
    return lines


def _pretrainings(c: Comparison) -> list[str]:
    if c.pretrainings.empty:
        return []
    rows = [[source, budget, f"{n:.3g}", f"{seed:g}", *(f"{v:.4f}" if np.isfinite(v) else "—" for v in vals)]
            for (source, budget, n, seed), vals in c.pretrainings.iterrows()]
    return ["", f"## The pre-trainings: loss on the source's validation set (bits/char), by {c.by}", "",
            *md_table(["source", "pre-training budget", "N", "seed", *c.pretrainings.columns], rows)]


def markdown(c: Comparison) -> str:
    lines = ["# Comparison: " + ", ".join(f"`{n}`" for n in c.names), ""]
    if c.by is None and len(c.names) > 1:
        lines += ["On the cells (regime, source, target, budget, N, D) that every sweep has.", ""]
    lines += _health(c)
    title = "Best validation loss (bits/char) per cell" + (f", by {c.by}" if c.by else "") + \
            ("; the lowest in each row in bold" if c.by else "")
    lines += ["## " + title, ""]
    lines += md_table(["regime", *(["source", "target"] if c.pairs else []),
                       *(["pre-training budget"] if c.budgets else []), "N", "D", *(["seed"] if c.seeds else []),
                       *c.groups], _cell_rows(c))
    if len(c.unconverged):
        lines.append("† not converged (reached the step ceiling, or best point inside warm-up): not a measurement, "
                     "never the best of its row.")
    lines += _summary(c) + _pretrainings(c)
    return "\n".join(lines) + "\n"


def write_compare(c: Comparison, out: Path) -> Path:
    with staging.staged(out) as stage:
        (stage / "compare.md").write_text(markdown(c), encoding="utf-8")
        c.wide.reset_index().to_csv(stage / "compare.csv", index=False)
    return out / "compare.md"
