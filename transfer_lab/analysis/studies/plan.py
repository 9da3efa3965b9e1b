"""analyze.py action=plan (make plan): the runs that would close a sweep's gaps, as commands.

Three gaps, each read off an analysed sweep:
  coverage  fine-tuned losses below every from-scratch run at their N: D_E is model-based until
            the scratch grid reaches past it (3× the model-based D_E), as far as the target
            corpus allows; past that, the corpus is too small and the plan says so
  β         an interval that covers 0 or is wider than 0.5: more model sizes, spanning more N
  α         the same for α: more fine-tune sizes D_F, spanning more decades
  noise     curves that rise with data: more seeds for those curves
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from transfer_lab.analysis.fit.intervals import identified
from transfer_lab.study import protocol
from transfer_lab.study.keys import compact_number

# where an embedded target is too small, the corpus with the anchors' data (needs the hub)
LARGER_CORPUS = {"python": "codeparrot_python_hub", "german": "fineweb2_de_hub", "spanish": "fineweb2_es_hub",
                 "chinese": "fineweb2_zh_hub", "english": "openwebtext_hub"}
MARGIN = 3.0  # the scratch grid should reach this far past the largest D_E it must interpolate
MIN_DECADES_N = 1.5  # β needs N to span this much (over a 4× range its interval covers both signs)
MIN_DECADES_DF = 2.0
MIN_FINETUNE_CHARS = 1e4


@dataclass
class Plan:
    sweep: str
    findings: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


def _base(table: pd.DataFrame, sweep: str) -> str:
    # the sweep's latest launch: runs reused from another sweep keep the experiment they ran under
    launched = table[table["experiment"].notna() & (table["experiment"] != "")] if "experiment" in table else table.iloc[:0]
    exp = launched.sort_values("finished_at", na_position="first")["experiment"].iloc[-1] if len(launched) else None
    return "python train.py -m" + (f" experiment={exp}" if exp else "") + f" sweep={sweep}"


def larger_shape(row) -> tuple[int, int, int]:
    """(n_layer, n_embd, n_head) of about 4× the non-embedding params of `row`'s model: twice the
    layers, √2 the width at the same head size; from N alone (12·L·d²) where the shape is unknown."""
    layers, width, heads = int(row.get("n_layer") or 0), int(row.get("n_embd") or 0), int(row.get("n_head") or 0)
    if layers and width and heads:
        head_dim = max(width // heads, 1)
        new_width = max(head_dim, int(round(width * math.sqrt(2) / head_dim)) * head_dim)
        return layers * 2, new_width, new_width // head_dim
    n = 4 * float(row["N"])
    layers = max(1, round((n / (12 * 64 ** 2)) ** (1 / 3)))  # about 64 wide per layer at these sizes
    width = max(16, int(round(math.sqrt(n / (12 * layers)) / 16)) * 16)
    return layers, width, width // 16


def _shape(row) -> str:
    """The overrides that select `row`'s model size ("" where the records do not say)."""
    if not all(row.get(k) for k in ("n_layer", "n_embd", "n_head")):
        return ""
    return f"model.n_layer={int(row['n_layer'])} model.n_embd={int(row['n_embd'])} model.n_head={int(row['n_head'])}"


def _command(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _grid(values) -> str:
    return ",".join(compact_number(v) for v in values)


def plan_runs(res, collection=None) -> Plan:
    t = res.table
    plan = Plan(sweep=res.sweep)
    base = _base(t, res.sweep)
    usable = t[~t["excluded"]]
    scratch, ft = usable[usable["regime"] == "scratch"], usable[usable["regime"] == "finetune"]
    if not len(ft) or not len(scratch):
        plan.findings.append("the sweep needs both from-scratch and fine-tuned runs before a plan can be made")
        plan.commands.append(f"{base} regime=scratch,finetune")
        return plan
    _coverage(plan, base, scratch, ft)
    _exponents(plan, base, res, usable, ft)
    _seeds(plan, base, res, usable)
    if not plan.commands:
        plan.findings.append("no gap found: every fine-tuned loss is interpolated, no curve rises with data, and "
                             "α and β are identified; more seeds would narrow the intervals further")
    return plan


def _coverage(plan: Plan, base: str, scratch: pd.DataFrame, ft: pd.DataFrame) -> None:
    for n, g in ft.groupby("N"):
        below = g[g["flags"].str.contains("below_scratch_range", na=False)]
        if not len(below):
            continue
        sc = scratch[scratch["N"] == n]
        top = float(sc["D_F"].max()) if len(sc) else 0.0
        d_e = below["D_E"].replace([np.inf], np.nan).dropna()
        # a loss below the law's floor has no finite D_E: aim a decade past the top, the most one plan asks
        needed = MARGIN * float(d_e.max()) if len(d_e) else 10 * max(top, float(g["D_F"].max()))
        row = g.iloc[0]
        corpus, corpus_chars = row["target_corpus"], float(row["target_corpus_chars"])
        shape = _shape(row).replace("model.", "")
        what = (f"N={n:.3g}{f' ({shape})' if shape else ''}: {len(below)} of {len(g)} fine-tuned losses lie "
                f"below its from-scratch curve (which reaches D={top:.3g}); model-based D_E up to "
                f"{d_e.max():.3g}" if len(d_e) else "below the law's floor")
        if np.isfinite(corpus_chars) and needed > corpus_chars:
            hint = LARGER_CORPUS.get(str(corpus))
            plan.findings.append(
                f"{what}. It needs D = {needed:.2g} characters of {corpus}; the corpus has {corpus_chars:.2g}: "
                + (f"use {hint} (hub) or accept model-based D_E" if hint else "add target data or accept model-based D_E"))
            needed = corpus_chars
        else:
            plan.findings.append(f"{what}; from-scratch runs up to D ≈ {needed:.2g} would let them be interpolated.")
        new = [d for d in protocol.log_grid(top * 2.5, needed) if d > top * 1.5] if needed > top * 1.5 else []
        if new:
            plan.commands.append(_command(base, "regime=scratch", _shape(row), f"data.scratch_chars={_grid(new)}"))


def _exponents(plan: Plan, base: str, res, usable: pd.DataFrame, ft: pd.DataFrame) -> None:
    fit = res.fit("transfer") or res.fit("unified")
    sizes = usable.drop_duplicates("N").sort_values("N")
    n_lo, n_hi = float(sizes["N"].min()), float(sizes["N"].max())
    span_n = math.log10(n_hi / n_lo) if n_lo > 0 else 0.0
    beta = fit.ci.get("beta") if fit is not None else None
    if beta is None or not identified(*beta) or span_n < MIN_DECADES_N:
        why = (f"β's interval [{beta[0]:.3g}, {beta[1]:.3g}]" if beta else "β is not fitted") + \
              f" with N spanning {span_n:.2f} decades ({n_lo:.3g}–{n_hi:.3g})"
        layers, width, heads = larger_shape(sizes.iloc[-1])
        n_new = 12 * layers * width ** 2
        plan.findings.append(f"{why}: add a larger size, N ≈ {n_new:.2g} (≈ 4× the largest), with its own "
                             f"pre-training, scratch and fine-tune grids.")
        plan.commands.append(f"{base} model.n_layer={layers} model.n_embd={width} model.n_head={heads}")
    d_lo, d_hi = float(ft["D_F"].min()), float(ft["D_F"].max())
    span_d = math.log10(d_hi / d_lo) if d_lo > 0 else 0.0
    alpha = fit.ci.get("alpha") if fit is not None else None
    unidentified = alpha is not None and (not identified(*alpha) or span_d < MIN_DECADES_DF)
    saturated = _saturated(ft)
    if unidentified and len(saturated) * 2 >= ft["N"].nunique():
        # D_T falling with D_F is not noise around a power law: the fine-tune data is no longer small
        # next to the pre-training data, and more D_F only adds points past the turn
        tokens, chars = _largest(ft, "pretrain_budget_tokens", np.nan), _largest(ft, "pretrain_budget", np.nan)
        plan.findings.append(
            f"α's interval [{alpha[0]:.3g}, {alpha[1]:.3g}]: D_T falls at the largest D_F at N = "
            f"{', '.join(f'{n:.3g}' for n in saturated)}: transfer saturates as D_F nears the pre-training data "
            f"({chars:.2g} characters), so more D_F cannot identify α; pre-train longer to keep the D_F grid in "
            "the low-data regime (a second sweep: its from-scratch runs are reused, not retrained).")
        if np.isfinite(tokens):
            plan.commands.append(f"{base}_p{compact_number(4 * tokens)} pretrain.tokens={compact_number(4 * tokens)}")
        return
    if unidentified:
        # below 1e4 characters a subset is a fraction of one document: extend upwards
        new = [d for d in protocol.log_grid(max(d_lo / 10, MIN_FINETUNE_CHARS), d_hi * 10) if d < d_lo or d > d_hi]
        corpus_chars = _largest(ft, "target_corpus_chars", np.inf)
        new = [d for d in new if d <= corpus_chars]
        plan.findings.append(f"α's interval [{alpha[0]:.3g}, {alpha[1]:.3g}] with D_F spanning {span_d:.2f} decades "
                             f"({d_lo:.3g}–{d_hi:.3g}): fine-tune at more D_F, with from-scratch runs a decade past them.")
        if new:
            plan.commands.append(f"{base} regime=finetune data.finetune_chars={_grid(new)}")
            top = float(usable.loc[usable["regime"] == "scratch", "D_F"].max())
            wanted = min(10 * max(new), corpus_chars)
            more = [d for d in protocol.log_grid(top * 2.5, wanted) if d > top * 1.5] if wanted > top * 1.5 else []
            if more:
                plan.commands.append(f"{base} regime=scratch data.scratch_chars={_grid(more)}")


def _largest(rows: pd.DataFrame, column: str, default: float) -> float:
    return float(rows[column].max()) if rows[column].notna().any() else default


def _saturated(ft: pd.DataFrame) -> list[float]:
    """Sizes whose D_T at the largest D_F is below their D_T at a smaller D_F."""
    out = []
    for n, g in ft.dropna(subset=["D_T"]).groupby("N"):
        g = g.groupby("D_F")["D_T"].mean().sort_index()
        if len(g) >= 2 and g.iloc[-1] < g.iloc[:-1].max():
            out.append(float(n))
    return out


def _seeds(plan: Plan, base: str, res, usable: pd.DataFrame) -> None:
    if not res.violations:
        return
    seeds = sorted(set(int(s) for s in usable["seed"].dropna()))
    more = ",".join(str(s) for s in range(max(seeds) + 1, max(seeds) + 3)) if seeds else "1,2"
    curves: dict[tuple, set] = {}
    for v in res.violations:
        plan.findings.append(f"{v.describe()}: repeat both points with seeds {more} (seed noise or a real bump).")
        curves.setdefault((v.regime, v.n), set()).update({v.d_low, v.d_high})
    for (regime, n), ds in curves.items():
        row = usable[usable["N"] == n].iloc[0]
        key = "data.scratch_chars" if regime == "scratch" else "data.finetune_chars"
        plan.commands.append(_command(base, f"regime={regime}", _shape(row), f"{key}={_grid(sorted(ds))}", f"seed={more}"))


def format_plan(plan: Plan) -> str:
    lines = [f"plan for sweep {plan.sweep}:"]
    lines += [f"  - {f}" for f in plan.findings]
    if plan.commands:
        lines += ["", "runs to add (finished runs are skipped, so each command trains only what is new):"]
        lines += [f"  {c}" for c in dict.fromkeys(plan.commands)]
    return "\n".join(lines)
