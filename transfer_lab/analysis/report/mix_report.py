"""The mix study's report: mix.md, table.csv, fits.json, plots, and verify.sh (the held-out runs that
test its predictions). Reads a MixStudy (analysis/mixing.py); computes nothing but the commands."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_lab.analysis.fit.mix_fitting import STEP
from transfer_lab.analysis.report import mix_sections as sections
from transfer_lab.analysis.report import plots, staging
from transfer_lab.analysis.report.markdown import fmt, fmt_interval, md_table
from transfer_lab.analysis.report.markdown import fmt_chars as _chars
from transfer_lab.analysis.report.markdown import fmt_size as _size
from transfer_lab.analysis.studies.mix_checks import r_star_verdict
from transfer_lab.analysis.studies.mixing import VERIFY_EXPERIMENT, MixStudy, on_axis

plt = plots.plt


def _iv(ci, digits: int = 3, pct: bool = False) -> str:
    return fmt_interval(ci, digits, missing="", pct=pct)


def _source_arg(mixtures: list[dict]) -> str:
    """data.source=... for a multirun over mixtures (a pure source by its name)."""
    def one(w):
        w = {s: round(v, 2) for s, v in w.items() if v > 1e-9}
        return next(iter(w)) if len(w) == 1 else "{" + ",".join(f"{s}:{v:g}" for s, v in w.items()) + "}"
    return shlex.quote("data.source=" + ",".join(one(w) for w in mixtures))


def _train(study: MixStudy, experiment: str, n: float, mixtures: list[dict]) -> str:
    layers, width, heads = study.shapes[n]
    return (f"python train.py -m experiment={experiment} model.n_layer={layers} model.n_embd={width} "
            f"model.n_head={heads} {_source_arg(mixtures)}")


def recommendation(study: MixStudy) -> tuple[str, str]:
    """(the sentence a researcher acts on, the command that would narrow its interval)."""
    cell = study.cell(study.ref["N"], study.ref["D_F"])
    if cell is None or study.axis is None:
        return "no recommendation: " + ("; ".join(study.messages) or "the reference cell has no mixing law"), ""
    a, b = study.axis
    r, (lo, hi) = cell.best[b], cell.best_ci[b]
    where = f"for {study.target} at N = {_size(cell.n)} with {_chars(cell.d_f)} target characters"
    stands, caveat = r_star_verdict(study, cell)
    trained = set(np.round(study.table.loc[np.isclose(study.table["N"], cell.n), f"w_{b}"].dropna(), 2))
    if not stands:  # seeds at the trained ratios both the law and the data point to resolve them
        raw, raw_lo, raw_hi = study.raw_best.get((cell.n, cell.d_f), (np.nan,) * 3)
        span = (min(lo, raw_lo), max(hi, raw_hi)) if np.isfinite(raw) else (lo, hi)
        inside = sorted(c for c in trained if span[0] - 1e-9 <= c <= span[1] + 1e-9)
        return (f"no verdict on the best mixture {where}: {caveat}; the grid's measured best is {raw:.0%} {b} "
                f"(the mixing law's r* would be {r:.0%} {_iv((lo, hi), pct=True)})"), \
            _train(study, study.experiment, cell.n, [{a: 1 - c, b: c} for c in inside]) + " seed=1,2"
    worth = (f"worth {fmt(cell.gain, 2)}× {_iv(cell.gain_ci, 2)} the data {a} alone transfers "
             f"(D_T = {fmt(cell.d_t)} {_iv(cell.d_t_ci)} characters)")
    if r <= 1e-9 and lo <= 1e-9 and hi <= STEP:
        text = f"{where}, pre-train on {a} alone: every mixture with {b} is predicted to transfer less"
    else:
        text = f"{where}, pre-train on {r:.0%} {_iv((lo, hi), pct=True)} {b} (the rest {a}): {worth}"
    if cell.model_based:
        text += f"; {cell.model_based} of its {cell.fit.n_points} points have a model-based D_E"
    if caveat:
        text += f"; {caveat}"
    candidates = sorted({round(round(v / STEP) * STEP, 2) for v in (lo, (lo + r) / 2, r, (r + hi) / 2, hi)} - trained)
    if not candidates:  # the interval's ratios are all trained: seeds, not ratios, narrow it
        inside = sorted(c for c in trained if lo - 1e-9 <= c <= hi + 1e-9)
        return text, _train(study, study.experiment, cell.n, [{a: 1 - c, b: c} for c in inside]) + " seed=1,2"
    return text, _train(study, study.experiment, cell.n, [{a: 1 - c, b: c} for c in candidates])


def verify_commands(study: MixStudy) -> list[str]:
    """The held-out runs that test the predictions: r* at the reference size (unless on the grid), and the
    simplex's predicted best with a spread of its mixtures at the next size up."""
    out = []
    cell = study.cell(study.ref["N"], study.ref["D_F"])
    t = study.table
    if cell is not None:
        a, b = study.axis
        r = round(round(cell.best[b] / STEP) * STEP, 2)
        on_grid = np.isclose(t.loc[np.isclose(t["N"], cell.n), f"w_{b}"].dropna(), r).any()
        if not on_grid:
            out.append(_train(study, VERIFY_EXPERIMENT, cell.n, [{a: 1 - r, b: r}]))
    simplex = study.simplex
    best = simplex.get("best", {}).get(study.ref["D_F"]) if simplex else None
    bigger = sorted(n for n in study.shapes if n > simplex.get("N", np.inf)) if simplex else []
    if best is not None and bigger:
        small = t[np.isclose(t["N"], simplex["N"]) & np.isclose(t["D_F"], study.ref["D_F"])]
        small = small.groupby("source_mix").first().sort_values("D_T", ascending=False)
        spread = small.iloc[[0, len(small) // 2, len(small) - 1]] if len(small) >= 3 else small
        mixtures = [{s: round(round(best.best[s] / STEP) * STEP, 2) for s in simplex["sources"]}]
        mixtures += [{s: row[f"w_{s}"] for s in simplex["sources"]} for _, row in spread.iterrows()]
        mixtures += [{s: 1.0} for s in simplex["sources"]]  # the pure sources (atlas pairs where it ran)
        mixtures = [{s: w for s, w in m.items() if w > 1e-9} for m in mixtures]
        unique = list({json.dumps(m, sort_keys=True): m for m in mixtures}.values())
        out.append(_train(study, VERIFY_EXPERIMENT, bigger[0], unique))
    return out


def _plot_ratio_curves(study: MixStudy, out: Path) -> Path | None:
    if not study.cells:
        return None
    b = study.axis[1]
    d_fs = sorted({c.d_f for c in study.cells})
    colors = plots._colors({c.n for c in study.cells})
    fig, axes = plt.subplots(1, len(d_fs), figsize=(4.2 * len(d_fs), 3.6), sharey=True, squeeze=False)
    on = on_axis(study.table, study.axis)
    r = np.linspace(0, 1, 101)
    for ax, d_f in zip(axes[0], d_fs):
        for c in (c for c in study.cells if c.d_f == d_f):
            rows = on[np.isclose(on["N"], c.n) & np.isclose(on["D_F"], d_f)]
            for held, marker in ((False, "o"), (True, "D")):
                g = rows[rows["held_out"] == held]
                err = np.abs(np.vstack([g["D_T"] - g["D_T_lo"], g["D_T_hi"] - g["D_T"]]).astype(float))
                ax.errorbar(g[f"w_{b}"], g["D_T"], yerr=np.nan_to_num(err), fmt=marker, color=colors[c.n],
                            mfc="none" if held else colors[c.n], ms=5, capsize=2,
                            label=f"N={_size(c.n)}" + (" held out" if held else "") if len(g) else None)
            ax.plot(r, np.exp(c.fit.evaluate({"r": r})), color=colors[c.n], lw=1)
            ax.axvspan(*c.best_ci[b], color=colors[c.n], alpha=0.08)
        ax.set(xscale="linear", yscale="log", xlabel=f"share of {b} in pre-training (r)", title=f"D_F = {_chars(d_f)}")
    axes[0][0].set_ylabel("D_T (characters)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Data transferred against the mixture ({study.law}; shaded: r* interval)", fontsize=10)
    return _save(fig, out, "mix_ratio")


def _plot_prior(study: MixStudy, out: Path) -> Path | None:
    p = study.prior
    if p is None or p.empty:
        return None
    fig, ax = plt.subplots(figsize=(4.4, 4))
    for name, marker in (("arithmetic", "o"), ("geometric", "s")):
        ax.scatter(p["D_T"], p[name], marker=marker, s=18, label=f"{name} mean of the pure sources")
    lims = np.nanpercentile(np.r_[p["D_T"], p["arithmetic"]].astype(float), [0, 100])
    ax.plot(lims, lims, "k--", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="measured D_T of the mixture", ylabel="predicted from the atlas")
    ax.legend(fontsize=7)
    return _save(fig, out, "mix_atlas_prior")


def _save(fig, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return png


def mix_markdown(study: MixStudy, command: str, settings: dict, sentence: str, narrow: str, verify: list[str]) -> str:
    t = study.table
    L = [f"# Pre-training mixtures for {study.target}: sweep `{study.sweep}`", "",
         f"Command: `{command}`. {len(t)} fine-tuned cells ({int(t['held_out'].sum())} held out: "
         f"experiment={VERIFY_EXPERIMENT}, in no fit); D_T in characters of {study.target}, through one from-scratch "
         f"curve per N (interpolated; model-based through the Kaplan fit outside it, labelled). Intervals: "
         f"{settings['n_bootstrap']} replicates, {settings['ci']:.0%} percentile.", "",
         "## Recommendation", "", sentence + ".", ""] + sections.measured_at_reference(study)
    if narrow:
        L += ["To narrow it:", "", f"    {narrow}", ""]
    if study.axis is not None:
        a, b = study.axis
        L += [f"## The paper's two experiments: {a} → {study.target} and {a} + {b} → {study.target}", "",
              "Hernandez et al. found k = 1.9e4, α = 0.18, β = 0.38 from text and k = 2.1e5, α = 0.096, β = 0.38 "
              "from 50% text + 50% non-Python code (at 40M-parameter-and-up sizes, D_F in characters of Python):", ""]
        L += sections.transfer_laws(study) + [""]
        L += ["## The mixing law", "", "Per (N, D_F), ln D_T against r; leave-one-ratio-out error over the interior "
              "ratios:", ""]
        L += md_table(["law", "RMSE of ln D_T"], [[k + (" (chosen)" if k == study.law else ""), fmt(v)]
                                                  for k, v in study.selection.items()])
        L += ["", "## Noise and misfit", ""] + sections.noise_section(study)
        L += ["## The best ratio per (N, D_F)", "", "r* is a verdict only where the mixing law fits within the seed "
              "noise and the grid's measured best ratio lies inside r*'s interval.", ""] + sections.best_rows(study) + [""]
        L += ["Does r* move with N or with D_F? (paired replicate differences)", ""] + sections.moves(study) + [""]
        L += ["![ratio](plots/mix_ratio.png)", "", "## Verified: held-out runs at r*", ""] + sections.verified(study)
    L += ["## Three or more sources", ""] + sections.simplex(study)
    L += ["## The atlas as a prior", ""] + sections.prior(study) + ["![prior](plots/mix_atlas_prior.png)", ""]
    L += ["## Every cell", ""] + sections.cells_table(study) + [""]
    if study.messages:
        L += ["## Messages", ""] + [f"- {m}" for m in study.messages] + [""]
    L += ["## Runs that test the predictions (verify.sh)", ""] + ([f"    {c}" for c in verify] or ["none needed"])
    return "\n".join(L) + "\n"


def write_mix(study: MixStudy, out: Path, command: str, settings: dict) -> Path:
    """mix.md, table.csv (the fine-tuned cells and the from-scratch runs they were inverted through),
    fits.json, verify.sh and plots/, all new or all old (staging)."""
    sentence, narrow = recommendation(study)
    verify = verify_commands(study)
    t = pd.concat([study.table, study.scratch_table]) if study.scratch_table is not None else study.table
    script = ["#!/bin/sh", f"# written by `{command}`: held-out runs (experiment={VERIFY_EXPERIMENT}) that test its "
              "predictions", "set -e"] + [c.replace("python ", '"${PYTHON:-python}" ', 1) for c in verify]
    with staging.staged(out) as stage:
        (stage / "mix.md").write_text(mix_markdown(study, command, settings, sentence, narrow, verify), encoding="utf-8")
        _plot_ratio_curves(study, stage / "plots")
        _plot_prior(study, stage / "plots")
        t.drop(columns=[c for c in ("error",) if c in t]).to_csv(stage / "table.csv", index=False)
        (stage / "verify.sh").write_text("\n".join(script) + "\n", encoding="utf-8")
        (stage / "fits.json").write_text(json.dumps(_fits(study, sentence, narrow, verify, settings), indent=1,
                                                    default=_plain), encoding="utf-8")
    return out / "mix.md"


def _plain(x):
    return float(x) if isinstance(x, (np.floating, np.integer)) else str(x)


def _fits(study: MixStudy, sentence: str, narrow: str, verify: list[str], settings: dict) -> dict:
    def law(c):
        return {"N": c.n, "D_F": c.d_f, "law": c.fit.law, "params": c.fit.params, "best": c.best, "best_ci": c.best_ci,
                "D_T": c.d_t, "D_T_ci": c.d_t_ci, "gain": c.gain, "gain_ci": c.gain_ci, "at_edge": c.at_edge,
                "model_based_points": c.model_based, "points": c.fit.n_points}
    s = study.simplex
    return {"sweep": study.sweep, "target": study.target, "axis": study.axis, "reference": study.ref,
            "settings": settings, "recommendation": sentence, "narrow": narrow, "verify": verify,
            "selection": study.selection, "law": study.law, "noise": study.noise, "residual": study.residual,
            "seed_noise": study.seed_noise, "spread": study.spread,
            "goodness": {k: dataclasses.asdict(g) | {"rejected": g.rejected} for k, g in study.goodness.items()},
            "cells": [law(c) for c in study.cells],
            "moves": study.moves, "verified": study.verified,
            "transfer_laws": [{"pretrained_on": p.source, "law": p.law, "params": p.params, "ci": p.ci}
                              for p in study.transfer_laws],
            "simplex": {k: v for k, v in s.items() if k != "best"} | {"best": {str(d): law(c) for d, c in
                                                                             s.get("best", {}).items()}} if s else {},
            "atlas_prior": pd.DataFrame(study.prior).to_dict(orient="records") if study.prior is not None else []}
