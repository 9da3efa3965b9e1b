"""The mix report's sections, each a list of Markdown lines from a MixStudy: what each mixture was
worth at the reference cell, the noise and the misfit, the best ratio per cell, whether it moves,
the simplex, the atlas as a prior, the held-out runs, and every cell."""

from __future__ import annotations

import numpy as np

from transfer_lab.analysis.fit.mix_fitting import STEP
from transfer_lab.analysis.report.markdown import fmt, fmt_interval, md_table
from transfer_lab.analysis.report.markdown import fmt_chars as _chars
from transfer_lab.analysis.report.markdown import fmt_size as _size
from transfer_lab.analysis.studies.mix_checks import r_star_verdict
from transfer_lab.analysis.studies.mixing import MixStudy, on_axis

# Hernandez et al. 2021, text → Python and 50% text + 50% non-Python code → Python
PAPER = {0.0: {"k": 1.9e4, "alpha": 0.18, "beta": 0.38}, 0.5: {"k": 2.1e5, "alpha": 0.096, "beta": 0.38}}


def _iv(ci, digits: int = 3, pct: bool = False) -> str:
    return fmt_interval(ci, digits, missing="", pct=pct)


def transfer_laws(study: MixStudy) -> list[str]:
    b = study.axis[1]
    rows = []
    for p in study.transfer_laws:
        share = next((v for v in (study.table.loc[study.table["source_mix"] == p.source, f"w_{b}"]).dropna()), np.nan)
        paper = PAPER.get(round(share, 2), {})
        rows.append([p.source, p.law, *[f"{fmt(p.params.get(k))} {_iv(p.ci.get(k))}" if p.params else "not fitted"
                                       for k in ("k", "alpha", "beta")],
                     *[fmt(paper.get(k)) if paper else "" for k in ("k", "alpha", "beta")]])
    return md_table(["pre-trained on", "law", "k", "α", "β", "paper k", "paper α", "paper β"], rows)


def cells_table(study: MixStudy) -> list[str]:
    t = study.table.sort_values(["N", "D_F", "source_mix"])
    return md_table(["N", "D_F", "pre-trained on", "D_T (characters)", "multiplier", "D_E", "held out"],
                    [[_size(r["N"]), _chars(r['D_F']), r["source_mix"], f"{fmt(r['D_T'])} {_iv((r['D_T_lo'], r['D_T_hi']))}",
                      fmt(1 + r["D_T"] / r["D_F"]), r["D_E_method"] or "none", "yes" if r["held_out"] else ""]
                     for _, r in t.iterrows()])


def best_rows(study: MixStudy) -> list[str]:
    b = study.axis[1]
    return md_table(["N", "D_F", f"r* ({b} share)", "D_T at r*", "gain over r = 0", "replicates at an end",
                     "model-based points", "grid's best (measured)", "verdict"],
                    [[_size(c.n), _chars(c.d_f), f"{c.best[b]:.0%} {_iv(c.best_ci[b], pct=True)}",
                      f"{fmt(c.d_t)} {_iv(c.d_t_ci)}", f"{fmt(c.gain, 2)}× {_iv(c.gain_ci, 2)}", f"{c.at_edge:.0%}",
                      f"{c.model_based} of {c.fit.n_points}", raw(study, c), verdict(study, c)] for c in study.cells])


def raw(study: MixStudy, c) -> str:
    best, lo, hi = study.raw_best.get((c.n, c.d_f), (np.nan,) * 3)
    return f"{best:.0%} ({lo:.0%}–{hi:.0%})" if np.isfinite(best) else "—"


def verdict(study: MixStudy, c) -> str:
    stands, caveat = r_star_verdict(study, c)
    return ("r* stands" + (f" ({caveat})" if caveat else "")) if stands else f"no verdict: {caveat}"


def measured_at_reference(study: MixStudy) -> list[str]:
    """What each pre-training mixture was worth at the reference cell, measured (no law): the multiplier
    (D_F + D_T)/D_F with its interval; seeds averaged where the cell was repeated."""
    t = study.table
    at = t[np.isclose(t["N"], study.ref["N"]) & np.isclose(t["D_F"], study.ref["D_F"]) & ~t["held_out"]]
    if at.empty:
        return []
    rows = []
    for mix, g in at.groupby("source_mix"):
        d_f = float(g["D_F"].iloc[0])
        lo, hi = (1 + g["D_T_lo"].mean() / d_f, 1 + g["D_T_hi"].mean() / d_f)
        rows.append((float(1 + g["D_T"].mean() / d_f), [mix, f"{fmt(g['D_T'].mean())}", f"{fmt(1 + g['D_T'].mean() / d_f, 3)}× "
                     f"{_iv((lo, hi), 3)}", len(g), g["D_E_method"].iloc[0] or "none"]))
    seeds = " Seeds are averaged where a cell was repeated." if (at.groupby("source_mix").size() > 1).any() else ""
    return ([f"Measured at N = {_size(study.ref['N'])}, D_F = {_chars(study.ref['D_F'])}: the effective data multiplier of "
             f"each pre-training mixture, with its interval (the from-scratch curve redrawn by its noise).{seeds}", ""]
            + md_table(["pre-trained on", "D_T (characters)", "multiplier", "runs", "D_E"],
                       [r for _, r in sorted(rows, key=lambda x: -x[0])]))


def noise_section(study: MixStudy) -> list[str]:
    """The run noise, measured from seeds on the ratio grid, against the law's misfit and the spread."""
    sn, law = study.seed_noise, study.law
    if not sn:
        return [f"No seeds on the ratio grid: the chosen law's residual, {fmt(study.residual.get(law))} in ln D_T, "
                "stands in for run noise in its bootstrap. That counts its misfit as noise; seeds would measure it.", ""]
    g = study.goodness.get(law)
    out = [f"Run noise, measured: σ of ln D_T between seeds of one cell = {fmt(sn['sigma'])} ({sn['cells']} cells on the "
           f"ratio grid, {sn['dof']} degrees of freedom). The chosen law's pooled residual is {fmt(study.residual.get(law))}: "
           f"{'it is **rejected** by the data' if g is not None and g.rejected else 'it is not rejected'} "
           f"({g.describe() if g is not None else 'untested'}). The r* bootstrap redraws points by the seed noise.", "",
           "How far apart the mixtures are, at each (N, D_F) (D_T averaged over the seeds where a cell was repeated; "
           "z: the two ends' difference over its seed noise):", ""]
    rows = [[_size(r["N"]), _chars(r["D_F"]), r["ratios"], f"{fmt(r['max_over_min'], 3)}×",
             f"{fmt(r.get('ends_ratio'), 3)}×" if "ends_ratio" in r else "—",
             f"{r['ends_z']:+.1f}σ" if "ends_z" in r else "—",
             "/".join(map(str, r["ends_seeds"])) if "ends_seeds" in r else "—"] for r in study.spread]
    out += md_table(["N", "D_F", "ratios", "largest / smallest D_T", f"{study.axis[1]} / {study.axis[0]} (r = 1 vs 0)",
                     "z", "seeds (r = 0 / 1)"], rows)
    return out


def moves(study: MixStudy) -> list[str]:
    lines = []
    for m in study.moves:
        fixed = f"D_F = {_chars(m['at'])}" if m["along"] == "N" else f"N = {_size(m['at'])}"
        span = (f"{_size(m['from'])} → {_size(m['to'])}" if m["along"] == "N" else f"{_chars(m['from'])} → {_chars(m['to'])}")
        verdict = "moves" if m["moves"] else "does not move detectably"
        lines.append(f"- along {m['along']} ({span}) at {fixed}: r* shifts by {m['shift']:+.0%} "
                     f"{_iv(m['ci'], pct=True)}: it {verdict}")
    return lines


def simplex(study: MixStudy) -> list[str]:
    s = study.simplex
    if not s:
        return ["No mixtures of three or more sources yet (python train.py -m experiment=mix_simplex_python).", ""]
    L = [f"{s['mixtures']} mixtures of {', '.join(s['sources'])} at N = {_size(s['N'])}. Mixing laws of ln D_T by "
         "leave-one-mixture-out error (the pure sources are never left out: predicting them would extrapolate):", ""]
    L += md_table(["law", "RMSE of ln D_T"], [[k + (" (chosen)" if k == s["law"] else ""), fmt(v)]
                                              for k, v in s["selection"].items()])
    L += ["", "Predicted best mixture per D_F (bootstrap intervals per share):", ""]
    L += md_table(["D_F", *s["sources"], "D_T there", "gain over " + s["sources"][0]],
                  [[_chars(d_f), *[f"{c.best[x]:.0%} {_iv(c.best_ci[x], pct=True)}" for x in s["sources"]],
                    f"{fmt(c.d_t)} {_iv(c.d_t_ci)}", f"{fmt(c.gain, 2)}× {_iv(c.gain_ci, 2)}"]
                   for d_f, c in sorted(s["best"].items())])
    L += ["", "Does the small-size ranking hold at a larger size? (held-out runs there; Spearman's ρ of D_T over "
          "the mixtures measured at both sizes)", ""]
    if not s["ranking"]:
        L += ["Not measured yet: run the simplex line of verify.sh.", ""]
        return L
    L += md_table(["N", "D_F", "mixtures", "Spearman ρ (p)", "predicted best", "its rank at N", "best at N"],
                  [[_size(r["N"]), _chars(r['D_F']), r["mixtures"], f"{r['spearman']:.2f} ({r['p_value']:.2g})",
                    r["predicted_best"], f"{r['predicted_best_rank']} of {r['of']}" if r["predicted_best_rank"] else
                    "not trained", f"{r['best_at_N']} ({fmt(r['best_D_T'])})"] for r in s["ranking"]])
    return L + [""]


def prior(study: MixStudy) -> list[str]:
    p = study.prior
    if p is None or p.empty:
        return ["No mixture has all its pure sources measured at the same (N, D_F).", ""]
    L = ["Each mixture's D_T predicted from its pure sources' D_T alone (the atlas's pairs, no mixed run): "
         "their weighted mean (arithmetic) and weighted geometric mean.", ""]
    rows = []
    for name in ("arithmetic", "geometric"):
        ok = p[np.isfinite(p[name]) & (p["D_T"] > 0)]
        err = np.abs(np.log(ok[name] / ok["D_T"]))
        inside = ((ok["D_T_lo"] <= ok[name]) & (ok[name] <= ok["D_T_hi"])).sum()
        bias = np.exp(np.median(np.log(ok[name] / ok["D_T"]))) if len(ok) else np.nan
        rows.append([name, len(ok), f"{np.exp(np.median(err)):.2f}×" if len(ok) else "", f"{fmt(bias, 2)}×",
                     f"{inside} of {int(ok['D_T_lo'].notna().sum())}"])
    L += md_table(["prior", "mixtures × cells", "median error (factor)", "median prediction/measured",
                   "inside the measured D_T interval"], rows)
    return L + [""]


def verified(study: MixStudy) -> list[str]:
    if not study.verified:
        return [on_grid(study) or "No held-out run at r* yet: run verify.sh.", ""]
    return md_table(["N", "D_F", "r", "measured D_T", "predicted (interval)", "inside", "grid's best (D_T)"],
                    [[_size(v["N"]), _chars(v['D_F']), f"{v['r']:.0%}", f"{fmt(v['D_T'])} ({v['method']})",
                      f"{fmt(v['predicted'])} {_iv(v['interval'])}", "yes" if v["inside"] else "**no**",
                      f"{v['grid_best']} ({fmt(v['grid_best_D_T'])})"] for v in study.verified]) + [""]


def on_grid(study: MixStudy) -> str | None:
    """Where the reference cell's r* is a ratio the grid trained, that run is its measurement."""
    cell = study.cell(study.ref["N"], study.ref["D_F"])
    if cell is None or study.axis is None:
        return None
    b = study.axis[1]
    r = round(round(cell.best[b] / STEP) * STEP, 2)
    t = on_axis(study.table, study.axis)
    rows = t[np.isclose(t["N"], cell.n) & np.isclose(t["D_F"], cell.d_f) & np.isclose(t["r"], r)]
    if rows.empty:
        return None
    m = rows.iloc[0]
    inside = cell.d_t_ci[0] <= m["D_T"] <= cell.d_t_ci[1]
    return (f"r* = {r:.0%} at N = {_size(cell.n)}, D_F = {_chars(cell.d_f)} is a ratio the grid trained, so no held-out "
            f"run is needed: measured D_T there {fmt(m['D_T'])} {_iv((m['D_T_lo'], m['D_T_hi']))}, the mixing law's "
            f"{fmt(cell.d_t)} {_iv(cell.d_t_ci)} ({'inside' if inside else 'outside'} its interval). The held-out runs "
            "of verify.sh test the simplex's prediction at the next size (below).")
