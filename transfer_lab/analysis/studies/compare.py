"""analyze.py action=compare: sweeps side by side, or one sweep pivoted on a setting.

  compare.sweeps=[demo_cosine,demo]          the health of each (runs stopped at their step cap,
                                             runs not converged, curves rising with data) and
                                             each cell's best loss, per sweep
  compare.sweeps=[finetune_lr] compare.by=lr one sweep: each cell's best loss per value of `by`

Returns a Comparison (data); report/compare_report.py writes compare.md and compare.csv. Cells are (regime, source, target,
pre-training budget, N, D): the source, target and budget columns show where they vary (an atlas,
a budget study); losses are bits per character on each sweep's own fixed validation set.

  compare.sweeps=[pretrain_budget_cpu,pretrain_rule_cpu] compare.by=pretrain_rule
                                             the pre-training's plateau rule, cell by cell
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_lab.analysis import collect
from transfer_lab.analysis.fit import checks
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


@dataclass
class Comparison:
    """Sweeps side by side: each one's health, and the best loss (bits/char) of every cell per group."""

    names: list[str]
    by: str | None
    tolerance: float
    health: list[list] = field(default_factory=list)  # sweep, target runs, capped, not converged, rising, hours
    rising: dict[str, list[str]] = field(default_factory=dict)  # sweep -> curve points that rise with data
    wide: pd.DataFrame = field(default_factory=pd.DataFrame)  # cell (+ seed) x group
    valid: pd.DataFrame = field(default_factory=pd.DataFrame)  # the same, converged runs only
    unconverged: pd.Series = field(default_factory=pd.Series)  # (cell, group) -> count
    groups: list[str] = field(default_factory=list)
    single: int = 0  # cells measured at one value of `by` (left out)
    pairs: bool = False  # sources/targets vary (an atlas)
    budgets: bool = False  # pre-training budgets vary
    seeds: bool = False  # paired seed by seed
    pretrainings: pd.DataFrame = field(default_factory=pd.DataFrame)  # source loss by `by`


def compare(tables: dict[str, pd.DataFrame], by: str | None, tolerance: float) -> Comparison:
    tables = {name: _cells(t) for name, t in tables.items()}
    if by is None and len(tables) > 1:
        tables = common_cells(tables)
    out = Comparison(names=list(tables), by=by, tolerance=tolerance)
    for name, t in tables.items():
        row, out.rising[name] = _health(name, t, tolerance)
        out.health.append(row)
    long = _long(tables, by)
    # pivoted on a setting, runs are paired seed by seed: a seed's difference is not the setting's
    cell = CELL + (["seed"] if by not in (None, "seed") else [])
    wide = long.pivot_table(index=cell, columns="group", values="bits_per_char", aggfunc="mean").sort_index()
    # a run that did not converge is shown (marked †) but is no measurement: it never wins a row
    valid = long[long["converged"] != False].pivot_table(  # noqa: E712 - True/False/None
        index=cell, columns="group", values="bits_per_char", aggfunc="mean").reindex(index=wide.index, columns=wide.columns)
    out.unconverged = long[long["converged"] == False].groupby(cell + ["group"]).size()  # noqa: E712
    groups = list(dict.fromkeys(long["group"] if by is None else long.sort_values(by)["group"]))
    wide = wide[groups]
    if by:  # a cell measured at one value of `by` compares nothing (a scratch run has no pre-training rule)
        compared = wide.notna().sum(axis=1) >= 2
        out.single = int((~compared).sum())
        wide, valid = wide[compared], valid[compared]
        groups = [g for g in groups if wide[g].notna().any()]
        wide, valid = wide[groups], valid[groups]
    out.wide, out.valid, out.groups = wide, valid, groups
    out.pairs = _has_pairs(long)
    out.budgets = long.loc[long["regime"] == "finetune", "budget"].nunique() > 1
    out.seeds = "seed" in cell and wide.index.get_level_values("seed").nunique() > 1
    if by:
        out.pretrainings = _pretrainings(tables, by)
    return out


def _long(tables: dict[str, pd.DataFrame], by: str | None) -> pd.DataFrame:
    frames = []
    for name, t in tables.items():
        done = t[t["regime"].isin(collect.FIT_REGIMES) & (t["status"] == "done")].copy()
        done["group"] = name if by is None else done[by].map(lambda v: _by_label(by, v))
        done["bits_per_char"] = done["loss_per_char"] / math.log(2)
        frames.append(done)
    return pd.concat(frames)


def _pretrainings(tables: dict[str, pd.DataFrame], by: str) -> pd.DataFrame:
    """The pre-trainings themselves, by `by`: their loss on the source's validation set (a longer or
    differently stopped pre-training is first of all a better or worse model of its source)."""
    pre = pd.concat([t[(t["regime"] == "pretrain") & (t["status"] == "done")] for t in tables.values()])
    if pre.empty or pre[by].nunique() < 2:
        return pd.DataFrame()
    pre = pre.assign(group=pre[by].map(lambda v: _by_label(by, v)), bits_per_char=pre["loss_per_char"] / math.log(2))
    wide = pre.pivot_table(index=["source", "budget", "N", "seed"], columns="group", values="bits_per_char")
    wide = wide[wide.notna().sum(axis=1) >= 2]
    return wide.loc[:, wide.notna().any()]


def _by_label(by: str, value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return f"{by}=unrecorded"  # a record from before the setting existed
    return f"{by}={value:g}" if isinstance(value, float) else f"{by}={value}"


def load_compare(root: Path, sweeps: list[str], by: str | None, tolerance: float) -> Comparison:
    """`sweeps` side by side (or one sweep pivoted on the column `by`), read from their run folders."""
    if not sweeps:
        raise ConfigError("action=compare needs compare.sweeps, e.g. compare.sweeps=[demo_cosine,demo]")
    if by is None and len(sweeps) < 2:
        raise ConfigError("action=compare needs two sweeps, or one with compare.by (e.g. compare.by=lr)")
    if by is not None and by not in collect.COLUMNS:
        raise ConfigError(f"compare.by={by} is not a column of the runs table; use e.g. lr or seed")
    # cell by cell: an atlas's targets each keep their own validation set
    tables = {name: collect.collect_local(root, name, one_val_set=False).table for name in sweeps}
    return compare(tables, by, tolerance)
