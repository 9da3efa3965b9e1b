"""report.md (+ a self-contained report.html), table.csv and fits.json beside the plots."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from transfer_lab import atomic_files
from transfer_lab.analysis.fit.result import ANCHORS, AnalysisResult, FitSettings
from transfer_lab.analysis.report import staging
from transfer_lab.analysis.report.answer import (
    all_fits,
    answer_section,
    goodness_section,
)
from transfer_lab.analysis.report.budgets_report import budget_sections, noise_section
from transfer_lab.analysis.report.markdown import fmt as _g
from transfer_lab.analysis.report.markdown import fmt_interval as _iv
from transfer_lab.analysis.report.markdown import (
    markdown_to_html,
    md_table,
)


def fits_json(res: AnalysisResult) -> list[dict]:
    out = []
    for f in all_fits(res):
        g = res.goodness.get((f.law, f.group))
        out.append({"law": f.law, "group": f.group, "status": f.status, "message": f.message,
                    "n_points": f.n_points, "params": f.params, "ci": f.ci, "stderr_internal": f.stderr,
                    "converged": f.converged, "convergence": f.convergence, "at_bounds": f.at_bounds,
                    "aic": f.aic, "bic": f.bic, "rms_log_residual": f.rms_log, "holdout": f.holdout,
                    "n_bootstrap_ok": 0 if f.boot_theta is None else int(len(f.boot_theta)),
                    "goodness": None if g is None else dataclasses.asdict(g) | {"rejected": g.rejected}})
    return out


def _param_rows(res):
    anchor = ANCHORS["text→python"]
    rows = []
    for f in all_fits(res):
        if not f.ok:
            continue
        for name, v in f.params.items():
            lo, hi = f.ci.get(name, (float("nan"), float("nan")))
            a = anchor.get(name) if f.law in ("transfer", "unified") and name in ("k", "alpha", "beta") else None
            rows.append([f.law, f.group or "all", name, _g(v, 4), _iv((lo, hi)), _g(a) if a else ""])
    return rows


def _quality_rows(res):
    rows = []
    for f in all_fits(res):
        if not f.ok:
            rows.append([f.law, f.group or "all", f.n_points, "not fitted: " + f.message, "", "", "", "", ""])
            continue
        h = f.holdout
        hold = (f"{h['column']}={_g(h['value'])}: RMSE {_g(h.get('rmse_log'))}, mean abs rel err {_g(h.get('mean_abs_rel_err'))}"
                if "rmse_log" in h else h.get("message", "—"))
        rows.append([f.law, f.group or "all", f.n_points, "yes" if f.converged else f"NO ({f.convergence})",
                     ", ".join(f.at_bounds) or "—", _g(f.aic, 5), _g(f.bic, 5), _g(f.rms_log), hold])
    return rows


def _decision_rows(res):
    t = res.table
    ft = t[(t["regime"] == "finetune") & ~t["excluded"]].sort_values(["N", "D_F"])
    tr = res.fit("transfer")
    bb = res.budgets.better_buy if res.budgets is not None else None
    verdicts = ({(r.N, r.D_F, r.budget): r.verdict for r in bb.itertuples()} if bb is not None and len(bb) else {})
    rows = []
    for _, r in ft.iterrows():
        pred = "—"
        if tr is not None:
            dt = tr.params["k"] * r["D_F"] ** tr.params["alpha"] * r["N"] ** tr.params["beta"]
            pred = _g(1 + dt / r["D_F"])
        buy = verdicts.get((r["N"], r["D_F"], r["pretrain_budget"]),
                           "gap law not fitted: measured only" if not verdicts else "—")
        rows.append([_g(r["N"]), _g(r["D_F"]), _g(r["pretrain_budget"]), _g(r["loss"], 4), _g(r["multiplier"]), pred,
                     r["flags"], buy])
    return rows


def _how_measured(res: AnalysisResult) -> list[str]:
    t, s = res.table, res.settings
    L = ["## How it was measured", "",
         f"{_generated(t)} Loss: `{s.get('loss', 'per_char')}`; "
         f"bootstrap: {s['n_bootstrap']} resamples of whole runs, seed {s['seed']}, {s['ci']:.0%} percentile "
         f"intervals; Huber δ: {s['huber']}; D_E method: {s['method']}; low-data cut: D_F ≤ "
         f"{s['low_data_fraction']}·D(N).", ""]
    experiments = sorted({e for e in t.get("experiment", []) if isinstance(e, str) and e})
    if s.get("command"):
        train = (f"`python train.py -m experiment={experiments[0]}`" if len(experiments) == 1
                 else "the sweep's `python train.py -m ...` commands")
        L += ([f"Re-fit: `{s['command']}` reads these runs from their table.csv; train them again with {train} "
               "(runs already finished are skipped)."] if "source=table" in s["command"] else
              [f"Reproduce: {train}, then `{s['command']}` (runs already finished are skipped)."]) + [""]
    counts = t["regime"].value_counts().to_dict()
    hours = t.groupby("regime")["wall_time_s"].sum() / 3600
    return L + [f"Runs: {len(t)} in all ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()) if k)}); "
                f"usable: {int((~t['excluded']).sum())}; excluded: {int(t['excluded'].sum())}. Process time, summed "
                f"over the runs' wall times: {_g(hours.sum())} h "
                f"({', '.join(f'{k} {_g(v)} h' for k, v in hours.items() if k)}).", ""]


def _fits_sections(res: AnalysisResult) -> list[str]:
    L = ["## Fitted parameters", "", "Positive scale constants (k, N_c, D_c, A, B, D_l) are fitted as log10; "
         "Chinchilla, gap and rectified laws take N, D, p in millions; transfer/Kaplan in raw counts.", ""]
    L += md_table(["law", "group", "parameter", "value", "interval", "anchor (text→python)"], _param_rows(res))
    L += ["## Fit quality", "", "Residuals are in log space (ln of the target). Hold-out: refit without the "
          "largest N (or D_F) and predict it.", ""]
    L += md_table(["law", "group", "points", "converged", "at bounds", "AIC", "BIC", "RMS log resid.", "hold-out"],
                  _quality_rows(res))
    L += goodness_section(res)
    L += ["## App. C cross-check (fit the fits)", ""]
    a = res.appc
    L += ([f"- {a['message']}"] if "message" in a else
          [f"- per-D_F logistic fits on {a['n_dfs']} D_F values: median β = {_g(a['beta'])}; N*(D_F) ∝ D_F^γ with "
           f"γ = {_g(a['gamma'])}; implied α = 1 − γβ = {_g(a['alpha_implied'])}, implied k = {_g(a['k_implied'])}"]
          ) if a else ["- not computed (no fine-tuned points in the transfer fit)"]
    return L + [""]


def _runs_sections(res: AnalysisResult, figures, report_dir: Path) -> list[str]:
    t = res.table
    L = ["", "## Decision table", "", "Measured multiplier (D_F + D_T)/D_F, the transfer law's prediction, and, "
         "where the transfer-gap law is fitted at that N, which of doubling pre-training data p or doubling "
         "target data D_F lowers the loss more.", ""]
    L += md_table(["N", "D_F", "pre-train chars", "loss", "multiplier (measured)", "multiplier (law)", "flags",
                   "better buy"], _decision_rows(res))
    if figures:
        L += ["## Plots", ""]
        for title, png in figures:
            L += [f"### {title}", "", f"![{title}]({png.relative_to(report_dir).as_posix()})", ""]
    ft = t[(t["regime"] == "finetune") & ~t["excluded"] & ~t["in_transfer_fit"]]
    L += ["## Flagged fine-tuned points (kept in the table, left out of the interpolated transfer law)", "",
          "`model_based`: D_E from the unified law's from-scratch curve, with its bootstrap interval, because the "
          "fine-tuned loss lies outside the from-scratch runs' range at that N.", ""]
    L += (md_table(["run", "N", "D_F", "D_E", "D_T", "D_T interval", "flags"],
                   [[r.run_key, _g(r.N), _g(r.D_F), _g(r.D_E), _g(r.D_T),
                     _iv((r.D_T_lo, r.D_T_hi)) if np.isfinite(r.D_T_lo) else "—", r.flags]
                    for r in ft.itertuples()])
          if len(ft) else ["None.", ""])
    ex = t[t["excluded"]]
    L += ["## Excluded runs", ""]
    L += (md_table(["run", "regime", "reason"], [[r.run_key, r.regime, r.reason] for r in ex.itertuples()])
          if len(ex) else ["None.", ""])
    return L + ["## Files", "", "- `table.csv`: one row per run (with D_E, D_T, multiplier, fraction, flags)",
                "- `fits.json`: every fit's parameters, intervals, AIC/BIC, hold-out errors", ""]


def build_markdown(res: AnalysisResult, figures: list[tuple[str, Path]], report_dir: Path) -> str:
    """The answer first, then how it was measured, the laws, the checks, the fits and every run."""
    L = [f"# Transfer analysis: sweep `{res.sweep}`", ""] + answer_section(res, figures, report_dir)
    L += _how_measured(res)
    L += ["## The laws", ""] + headline(res) + [""]
    L += ["## Measurement checks", ""] + measurement_checks(res) + [""] + noise_section(res)
    if res.messages:
        L += ["## Messages (what could not be computed)", ""] + [f"- {m}" for m in res.messages] + [""]
    if res.notes:
        L += ["## Notes", ""] + [f"- {m}" for m in res.notes] + [""]
    L += _fits_sections(res) + budget_sections(res) + _runs_sections(res, figures, report_dir)
    return "\n".join(L)


def _generated(table) -> str:
    """When the newest run finished: the report is a function of its runs, so it carries their date,
    not the time it was written (the same runs give the same bytes)."""
    finished = [v for v in table.get("finished_at", []) if isinstance(v, str) and v]
    return f"Runs finished by {max(finished)[:16].replace('T', ' ')} UTC." if finished else "No finished runs."


def headline(res: AnalysisResult) -> list[str]:
    """The interpolated transfer law and the unified law's k, α, β side by side, whether they
    agree within their intervals, and what the data cannot identify."""
    anchor = ANCHORS["text→python"]
    rows = []
    first = ("interpolated (transfer law on D_E inverted inside each N's scratch range)"
             if res.settings.get("method", "interp") == "interp" else "transfer law on D_E from the Kaplan fit (method=kaplan)")
    for law, label in (("transfer", first),
                       ("unified", "model-based (unified law, fitted jointly on scratch and fine-tuned losses)")):
        f = res.fit(law)
        if f is None:
            why = res.fits[law].message if law in res.fits else "no runs to fit"
            rows.append([label, f"not fitted: {why}", "", "", ""])
            continue
        p, ci = f.params, f.ci
        rows.append([label, f"{_g(p['k'])} {_ci(ci, 'k')}", f"{_g(p['alpha'])} {_ci(ci, 'alpha')}",
                     f"{_g(p['beta'])} {_ci(ci, 'beta')}", f.n_points])
    rows.append(["anchor: Hernandez et al. text→python", _g(anchor["k"]), _g(anchor["alpha"]), _g(anchor["beta"]), ""])
    out = md_table(["D_T = k·D_F^α·N^β", "k", "α", "β", "points"], rows)
    if res.agreement:
        greek = {"k": "k", "alpha": "α", "beta": "β"}
        agree = [greek[name] for name, ok in res.agreement.items() if ok]
        differ = [greek[name] for name, ok in res.agreement.items() if not ok]
        out.append(f"- The two agree within their {res.settings['ci']:.0%} intervals on "
                   f"{', '.join(agree) or 'none of k, α, β'}" + (f"; they differ on {', '.join(differ)}." if differ else "."))
    elif res.fit("unified") is not None and res.fit("transfer") is None:
        out.append("- Only the model-based estimate exists: no fine-tuned loss lies inside a from-scratch curve's range "
                   "often enough to interpolate D_E. `analyze.py action=plan` prints the runs that would fix it.")
    for line in res.unidentified:
        out.append(f"- {line}")
    out += [""] + transfer_at_a_glance(res)
    if res.trade and res.rejected("transfer"):
        out.append(f"- Trade 10^(β/α) not shown: the transfer law is rejected by the data "
                   f"({res.goodness[('transfer', '')].describe()}), so its exponents do not make a verdict.")
    elif res.trade and math.isfinite(res.trade["factor"]):
        tci = res.trade.get("factor_ci")
        out.append(f"- Trade (interpolated law): 10× N transfers as much as {_g(res.trade['factor'])}× D_F "
                   f"(10^(β/α){', interval ' + f'[{_g(tci[0])}, {_g(tci[1])}]' if tci else ''}); the anchor's "
                   "10^(0.38/0.18) ≈ 129×.")
    elif res.trade:
        out.append(f"- Trade 10^(β/α) not computed: the fitted α = {_g(res.trade['alpha'])} is not positive.")
    return out


def transfer_at_a_glance(res: AnalysisResult) -> list[str]:
    """D_T measured at each (N, D_F) (interpolated, or model-based marked †), and whether fine-tuning
    beats training from scratch on the same D_F at each N."""
    t = res.table
    ft = t[(t["regime"] == "finetune") & ~t["excluded"] & t["D_T"].notna()]
    if res.budgets is not None:  # one budget's cells: pooling budgets would average different pre-trainings
        ft = ft[ft["pretrain_budget"] == res.main_budget]
    if not len(ft):
        return []
    pooled = " Seeds are averaged where a cell was repeated." if ft.groupby(["N", "D_F"]).size().max() > 1 else ""
    budget = f" at the largest pre-training budget (p = {_g(res.main_budget)} characters)" if res.budgets is not None else ""
    ft = ft.assign(mark=np.where(ft["D_E_method"] == "interpolated", "", "†"))
    cells = ft.groupby(["N", "D_F"]).agg(D_T=("D_T", "mean"), mark=("mark", "max")).reset_index()
    d_fs = sorted(cells["D_F"].unique())
    rows = []
    for n, g in cells.groupby("N"):
        by = {r.D_F: f"{_g(r.D_T)}{r.mark}" for r in g.itertuples()}
        rows.append([_g(n)] + [by.get(d, "—") for d in d_fs])
    out = [f"Effective data transferred D_T (characters) by model size N and fine-tuning data D_F{budget} "
           f"(† model-based: the fine-tuned loss lies outside that N's from-scratch range).{pooled}", ""]
    out += md_table(["N \\ D_F"] + [_g(d) for d in d_fs], rows)
    small = ft[ft["D_F"] == ft["D_F"].min()].groupby("N", as_index=False)[["D_F", "loss", "scratch_loss_at_D_F"]].mean()
    beats = [f"N={_g(r.N)}: {_g(r.loss, 4)} vs {_g(r.scratch_loss_at_D_F, 4)}" for r in small.itertuples()
             if np.isfinite(r.scratch_loss_at_D_F)]
    if beats:
        out.append(f"At the smallest D_F = {_g(small['D_F'].iloc[0])}, fine-tuned vs from-scratch loss: {'; '.join(beats)}.")
    return out + [""]


def measurement_checks(res: AnalysisResult) -> list[str]:
    """Converged runs, loss falling with data, and whether each N's scratch curve spans its fine-tuned losses."""
    t = res.table
    target = t[t["regime"].isin(("scratch", "finetune")) & (t["status"] == "done")]
    extended = target[target["reason"].str.startswith("extended", na=False)]
    target = target.drop(extended.index)  # a run's past under a lower ceiling: the run is counted once
    nc = target[target["converged"] == False]  # noqa: E712 - a column of True/False/None
    out = [f"- Converged early-stopping points: {len(target) - len(nc)} of {len(target)} finished target runs"
           + (f"; {len(nc)} not converged, left out (see Excluded runs)." if len(nc) else ".")
           + (f" {len(extended)} more stopped at a lower ceiling and were extended to convergence (counted once)."
              if len(extended) else "")]
    tol = res.settings.get("monotone_tolerance")
    if res.violations:
        out.append(f"- Loss rises with data in {len(res.violations)} place(s) (left out, see Messages):")
        out += [f"  - {v.describe()}" for v in res.violations]
    else:
        out.append(f"- Loss falls with data: no curve (regime, N) rises by more than the tolerance "
                   f"({'seed noise' if tol is None else f'floor {tol:.2%}, or 2√2× the seed noise where seeds repeat'}).")
    rows = []
    usable = t[~t["excluded"]]
    for n, g in usable[usable["regime"].isin(("scratch", "finetune"))].groupby("N"):
        sc, ft = g[g["regime"] == "scratch"], g[g["regime"] == "finetune"]
        methods = ft["D_E_method"].fillna("") if "D_E_method" in ft else []
        interp = int((methods == "interpolated").sum()) if len(ft) else 0
        rows.append([_g(n), f"{_g(sc['D_F'].min())}–{_g(sc['D_F'].max())}" if len(sc) else "—",
                     f"{_g(sc['loss'].min(), 4)}–{_g(sc['loss'].max(), 4)}" if len(sc) else "—",
                     f"{_g(ft['loss'].min(), 4)}–{_g(ft['loss'].max(), 4)}" if len(ft) else "—",
                     f"{interp} / {len(ft) - interp}"])
    if rows:
        out += ["", "Coverage (interpolate, don't extrapolate): a fine-tuned loss gets an interpolated D_E only "
                "inside its N's from-scratch loss range.", ""]
        out += md_table(["N", "scratch D", "scratch loss", "fine-tuned loss", "D_E interpolated / model-based"], rows)
    return out


def _ci(ci, name):
    return _iv(ci.get(name, (float("nan"), float("nan"))))


def write_report(res: AnalysisResult, report_dir: Path, make_plots: bool = True, html: bool = True,
                 pdf: bool = True, command: str | None = None) -> Path:
    """report.md (+ report.html), table.csv, fits.json and plots/, all new or all old (staging)."""
    fields = [f.name for f in dataclasses.fields(FitSettings)]
    res.settings = {**{k: res.settings[k] for k in fields if k in res.settings}, "command": command, "pdf": pdf,
                    **{k: v for k, v in res.settings.items() if k not in fields + ["command", "pdf"]}}
    report_dir = Path(report_dir)
    with staging.staged(report_dir) as out:
        res.table.to_csv(out / "table.csv", index=False)
        (out / "fits.json").write_text(json.dumps(
            {"sweep": res.sweep, "settings": res.settings, "fits": fits_json(res), "appc": res.appc,
             "trade": res.trade, "answer": res.answer, "noise": _noise_json(res), "budgets": _budgets_json(res),
             "messages": res.messages, "notes": res.notes}, indent=2, default=_jsonable),
            encoding="utf-8")
        figures = []
        if make_plots:
            label = "loss (nats/char)" if res.settings.get("loss", "per_char") == "per_char" else "loss (nats/token)"
            from transfer_lab.analysis.report import (
                plots,  # matplotlib: only where plots are made
            )
            try:
                figures = plots.make_all(res, out / "plots", label)
            except Exception as err:  # a plot must not cost the report; a full disk costs all of it
                if atomic_files.is_disk_full(err):
                    raise
                res.messages.append(f"plots failed: {type(err).__name__}: {err}")
        res.figures = [(title, report_dir / png.relative_to(out)) for title, png in figures]
        md = build_markdown(res, figures, out)
        (out / "report.md").write_text(md, encoding="utf-8")
        if html:
            (out / "report.html").write_text(markdown_to_html(md, out), encoding="utf-8")
    return report_dir / "report.md"


def _noise_json(res: AnalysisResult) -> list[dict]:
    if res.noise is None:
        return []
    return [{"regime": regime, "N": n, "sigma": sigma, "cells": cells}
            for (regime, n), (sigma, cells) in sorted(res.noise.by_size.items())]


def _budgets_json(res: AnalysisResult) -> dict:
    """The budget study's tables (what the report prints from them), so prose can quote their source."""
    b = res.budgets
    if b is None:
        return {}
    return {name: getattr(b, name).to_dict(orient="records")
            for name in ("transferred", "doubling", "gains", "better_buy", "held_out") if len(getattr(b, name))}


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
