"""analyze.py action=compare: sweeps side by side, or one sweep pivoted on a setting.

  compare.sweeps=[demo_cosine,demo]          the health of each (runs stopped at their step cap,
                                             runs not converged, curves rising with data) and
                                             each cell's best loss, per sweep
  compare.sweeps=[finetune_lr] compare.by=lr one sweep: each cell's best loss per value of `by`

Written as compare.md and compare.csv in the report folder. Cells are (regime, source, target,
pre-training budget, N, D): the source, target and budget columns show where they vary (an atlas,
a budget study); losses are bits per character on each sweep's own fixed validation set.

  compare.sweeps=[pretrain_budget_cpu,pretrain_rule_cpu] compare.by=pretrain_rule
                                             the pre-training's plateau rule, cell by cell
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_lab.analysis import checks, collect
from transfer_lab.analysis.report_format import md_table
from transfer_lab.errors import ConfigError

CELL = ["regime", "source", "target", "budget", "N", "D_F"]


def _cells(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its cell columns: a scratch run has no source nor budget ('—', which pivots keep)."""
    table = table.copy()
    table["source"] = table["source_mix"].fillna("—").astype(str)
    table["budget"] = table["pretrain_budget"].map(lambda v: "—" if pd.isna(v) else f"{v:.3g}")
    table["target"] = table["target_corpus"].fillna("—").astype(str)
    return table


def _health(name: str, table: pd.DataFrame, tolerance: float) -> list:
    target = table[table["regime"].isin(collect.FIT_REGIMES) & (table["status"] == "done")]
    capped = int((target["stop_reason"] == "max_steps").sum())
    not_converged = int((target["converged"] == False).sum())  # noqa: E712 - True/False/None
    usable = table[~table["excluded"] & table["regime"].isin(collect.FIT_REGIMES)]
    pairs = _has_pairs(usable)
    found = []
    for (source, target_corpus), part in usable.groupby(["source", "target"]):  # an atlas: curves per pair
        where = (f"{target_corpus}: " if source == "—" else f"{source} → {target_corpus}: ") if pairs else ""
        found += [where + v.describe() for v in checks.violations(part, checks.monotone_tolerance(part, tolerance))]
    hours = float(target["wall_time_s"].sum()) / 3600
    return [name, len(target), capped, not_converged, len(found), f"{hours:.2f}"], found


def common_cells(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Each sweep's runs at the cells (regime, N, D) that every sweep has: like against like."""
    keys = [set(map(tuple, t.loc[t["regime"].isin(collect.FIT_REGIMES), CELL].to_numpy().tolist())) for t in tables.values()]
    shared = set.intersection(*keys) if keys else set()
    return {name: t[[tuple(row) in shared or regime not in collect.FIT_REGIMES
                     for row, regime in zip(t[CELL].to_numpy().tolist(), t["regime"])]]
            for name, t in tables.items()}


def _has_pairs(table: pd.DataFrame) -> bool:
    """More than one target, or fine-tunes from more than one source (an atlas)."""
    return table["target"].nunique() > 1 or table.loc[table["regime"] == "finetune", "source"].nunique() > 1


def compare(tables: dict[str, pd.DataFrame], by: str | None, tolerance: float) -> tuple[str, pd.DataFrame]:
    tables = {name: _cells(t) for name, t in tables.items()}
    if by is None and len(tables) > 1:
        tables = common_cells(tables)
    lines = ["# Comparison: " + ", ".join(f"`{n}`" for n in tables), ""]
    if by is None and len(tables) > 1:
        lines += ["On the cells (regime, source, target, budget, N, D) that every sweep has.", ""]
    rows, found_all = [], {}
    for name, t in tables.items():
        row, found = _health(name, t, tolerance)
        rows.append(row)
        found_all[name] = found
    lines += ["## Health", "", "Target runs (scratch and fine-tuned) that finished; 'at the step cap': ended at "
              "max_steps rather than by early stopping; 'not converged': the run's own verdict (cap or best point "
              "inside warm-up); 'rises with data': curve points above a smaller D's loss beyond the tolerance "
              f"(floor {tolerance:.1%}).", ""]
    lines += md_table(["sweep", "target runs", "at the step cap", "not converged", "rises with data", "train hours"], rows)
    for name, found in found_all.items():
        lines += [f"- `{name}`: {v}" for v in found]
    if any(found_all.values()):
        lines.append("")
    frames = []
    for name, t in tables.items():
        done = t[t["regime"].isin(collect.FIT_REGIMES) & (t["status"] == "done")].copy()
        done["group"] = name if by is None else done[by].map(lambda v: _by_label(by, v))
        done["bits_per_char"] = done["loss_per_char"] / math.log(2)
        frames.append(done)
    long = pd.concat(frames)
    # pivoted on a setting, runs are paired seed by seed: a seed's difference is not the setting's
    cell = CELL + (["seed"] if by not in (None, "seed") else [])
    wide = long.pivot_table(index=cell, columns="group", values="bits_per_char", aggfunc="mean").sort_index()
    # a run that did not converge is shown (marked †) but is no measurement: it never wins a row
    valid = long[long["converged"] != False].pivot_table(  # noqa: E712 - True/False/None
        index=cell, columns="group", values="bits_per_char", aggfunc="mean").reindex(index=wide.index, columns=wide.columns)
    unconverged = long[long["converged"] == False].groupby(cell + ["group"]).size()  # noqa: E712
    groups = list(dict.fromkeys(long["group"] if by is None else long.sort_values(by)["group"]))
    wide = wide[groups]
    single = 0
    if by:  # a cell measured at one value of `by` compares nothing (a scratch run has no pre-training rule)
        compared = wide.notna().sum(axis=1) >= 2
        single = int((~compared).sum())
        wide, valid = wide[compared], valid[compared]
        groups = [g for g in groups if wide[g].notna().any()]
        wide, valid = wide[groups], valid[groups]
    title = "Best validation loss (bits/char) per cell" + (f", by {by}" if by else "") + \
            ("; the lowest in each row in bold" if by else "")
    lines += ["## " + title, ""]
    pairs = _has_pairs(long)
    budgets = long.loc[long["regime"] == "finetune", "budget"].nunique() > 1
    seeds = "seed" in cell and wide.index.get_level_values("seed").nunique() > 1
    table_rows = []
    for key, vals in wide.iterrows():
        (regime, source, target, budget, n, d), seed = key[:6], key[6:]
        ok = valid.loc[key]
        best = np.nanmin(ok.to_numpy(float)) if by and ok.notna().any() else None
        cells = []
        for group, v in vals.items():
            text = ("**%.4f**" if best is not None and ok[group] == best else "%.4f") % v if np.isfinite(v) else "—"
            cells.append(text + ("†" if (*key, group) in unconverged.index else ""))
        table_rows.append([regime, *([source, target] if pairs else []), *([budget] if budgets else []), f"{n:.3g}",
                           f"{d:.3g}", *([f"{seed[0]:g}"] if seeds else []), *cells])
    lines += md_table(["regime", *(["source", "target"] if pairs else []), *(["pre-training budget"] if budgets else []),
                       "N", "D", *(["seed"] if seeds else []), *groups], table_rows)
    if len(unconverged):
        lines.append("† not converged (reached the step ceiling, or best point inside warm-up): not a measurement, "
                     "never the best of its row.")
    if by:
        wins = valid.dropna(how="all").idxmin(axis=1).value_counts()
        lines.append(f"Lowest loss, among the {len(wide)} cells measured at two or more values, cells per value: "
                     + ", ".join(f"{g}: {wins.get(g, 0)}" for g in groups) + f"; {single} cells with one value left out.")
    elif len(groups) == 2:
        a, b = groups
        both = wide.dropna()
        rel = (both[b] / both[a] - 1)
        lines.append(f"`{b}` against `{a}` on the {len(both)} cells both have: median {rel.median():+.2%}, "
                     f"lower in {int((rel < 0).sum())}, higher in {int((rel > 0).sum())}.")
        for regime, part in rel.groupby(level="regime"):
            q = part.quantile([0.1, 0.5, 0.9])
            lines.append(f"- {regime}, {len(part)} cells: 10th / 50th / 90th percentile {q[0.1]:+.2%} / {q[0.5]:+.2%} / "
                         f"{q[0.9]:+.2%}; higher by more than 0.5% in {int((part > 0.005).sum())}, "
                         f"largest {part.max():+.2%} ({', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in part.idxmax())}).")
    if by:
        lines += _pretrainings(tables, by)
    return "\n".join(lines) + "\n", wide.reset_index()


def _pretrainings(tables: dict[str, pd.DataFrame], by: str) -> list[str]:
    """The pre-trainings themselves, by `by`: their loss on the source's validation set (a longer or
    differently stopped pre-training is first of all a better or worse model of its source)."""
    pre = pd.concat([t[(t["regime"] == "pretrain") & (t["status"] == "done")] for t in tables.values()])
    if pre.empty or pre[by].nunique() < 2:
        return []
    pre = pre.assign(group=pre[by].map(lambda v: _by_label(by, v)), bits_per_char=pre["loss_per_char"] / math.log(2))
    wide = pre.pivot_table(index=["source", "budget", "N", "seed"], columns="group", values="bits_per_char")
    wide = wide[wide.notna().sum(axis=1) >= 2]
    wide = wide.loc[:, wide.notna().any()]
    if wide.empty:
        return []
    rows = [[source, budget, f"{n:.3g}", f"{seed:g}", *(f"{v:.4f}" if np.isfinite(v) else "—" for v in vals)]
            for (source, budget, n, seed), vals in wide.iterrows()]
    return ["", f"## The pre-trainings: loss on the source's validation set (bits/char), by {by}", "",
            *md_table(["source", "pre-training budget", "N", "seed", *wide.columns], rows)]


def _by_label(by: str, value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return f"{by}=unrecorded"  # a record from before the setting existed
    return f"{by}={value:g}" if isinstance(value, float) else f"{by}={value}"


def run_compare(root: Path, out: Path, sweeps: list[str], by: str | None, tolerance: float) -> Path:
    """compare.md and compare.csv of `sweeps` side by side (or one sweep pivoted on the column `by`)."""
    if not sweeps:
        raise ConfigError("action=compare needs compare.sweeps, e.g. compare.sweeps=[demo_cosine,demo]")
    if by is None and len(sweeps) < 2:
        raise ConfigError("action=compare needs two sweeps, or one with compare.by (e.g. compare.by=lr)")
    if by is not None and by not in collect.COLUMNS:
        raise ConfigError(f"compare.by={by} is not a column of the runs table; use e.g. lr or seed")
    # cell by cell: an atlas's targets each keep their own validation set
    tables = {name: collect.collect_local(root, name, one_val_set=False).table for name in sweeps}
    md, wide = compare(tables, by, tolerance)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(md, encoding="utf-8")
    wide.to_csv(out / "compare.csv", index=False)
    return out / "compare.md"
