"""The atlas's files: atlas.md (+ .html), atlas.json, pairs.csv and heatmaps of α and of the
multiplier (rows: sources, columns: targets) with each cell's interval; unidentified cells hatched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_lab.analysis.report import staging
from transfer_lab.analysis.report.markdown import fmt as _g
from transfer_lab.analysis.report.markdown import (
    fmt_chars,
    fmt_size,
    markdown_to_html,
    md_table,
)
from transfer_lab.analysis.report.markdown import fmt_interval as _iv
from transfer_lab.analysis.studies.atlas import AtlasStudy, PairResult


def _matrix(pairs: list[PairResult], corpora: list[str], value) -> pd.DataFrame:
    m = pd.DataFrame(np.nan, index=corpora, columns=corpora)
    for p in pairs:
        m.loc[p.source, p.target] = value(p)
    return m


def heatmap(pairs, corpora, value, interval, unidentified, title: str, out: Path, name: str, log: bool = False):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = _matrix(pairs, corpora, value)
    data = np.log10(m.to_numpy(float)) if log else m.to_numpy(float)
    fig, ax = plt.subplots(figsize=(1.35 * len(corpora) + 2, 1.1 * len(corpora) + 1.2))
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis")
    fig.colorbar(image, ax=ax, label=("log10 " if log else "") + title.split(":")[0])
    by = {(p.source, p.target): p for p in pairs}
    for i, s in enumerate(corpora):
        for j, t in enumerate(corpora):
            p = by.get((s, t))
            if p is None:
                ax.text(j, i, "—", ha="center", va="center", color="grey")
                continue
            v, (lo, hi) = value(p), interval(p)
            label = "n/a" if not np.isfinite(v) else f"{v:.2g}\n[{lo:.2g}, {hi:.2g}]"
            ax.text(j, i, label, ha="center", va="center", fontsize=6.5, color="white" if np.isfinite(v) else "grey")
            if unidentified(p):
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.85", lw=0))
    ax.set_xticks(range(len(corpora)), corpora, rotation=35, ha="right")
    ax.set_yticks(range(len(corpora)), corpora)
    ax.set(xlabel="target (fine-tuned on)", ylabel="source (pre-trained on)", title=title)
    ax.title.set_fontsize(9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    fig.savefig(png, dpi=110)
    fig.savefig(out / f"{name}.pdf")
    plt.close(fig)
    return png


def literature_checks(pairs: list[PairResult]) -> list[str]:
    """Kim 2021: English→German transfers more than English→Spanish and English→Chinese.
    Hernandez et al.: β depends on the target alone (roughly constant over sources)."""
    by = {(p.source, p.target): p for p in pairs}
    lines = []
    de, es, zh = by.get(("english", "german")), by.get(("english", "spanish")), by.get(("english", "chinese"))
    if de and es and zh and all(np.isfinite(p.multiplier) for p in (de, es, zh)):
        def cmp(a, b):
            if a.multiplier_ci[0] > b.multiplier_ci[1]:
                return "more than"
            if a.multiplier_ci[1] < b.multiplier_ci[0]:
                return "less than"
            return "not distinguishable from"
        lines.append(f"- Kim 2021 (English→German > English→Spanish, > English→Chinese): the multiplier of English→German "
                     f"({_g(de.multiplier)} {_iv(de.multiplier_ci)}) is {cmp(de, es)} English→Spanish "
                     f"({_g(es.multiplier)} {_iv(es.multiplier_ci)}) and {cmp(de, zh)} English→Chinese "
                     f"({_g(zh.multiplier)} {_iv(zh.multiplier_ci)}), at the reference (N, D_F), 95% intervals.")
    else:
        lines.append("- Kim 2021 check not possible: English→German, →Spanish and →Chinese are not all measured.")
    for t in sorted({p.target for p in pairs}):
        betas = [p for p in pairs if p.target == t and "beta" in p.params and "beta" not in p.at_bounds]
        if len(betas) < 2:
            continue
        los, his = [p.ci["beta"][0] for p in betas], [p.ci["beta"][1] for p in betas]
        overlap = max(los) <= min(his)
        values = ", ".join(f"{p.source}: {_g(p.params['beta'])} {_iv(p.ci['beta'])}" for p in betas)
        lines.append(f"- β for target {t} ({'intervals share a common value' if overlap else 'intervals do NOT overlap'}"
                     f" across sources; Hernandez et al. read β as a property of the target): {values}")
    return lines


def measured_cells(pairs: list[PairResult], ref: dict) -> list[str]:
    """The measured answer first: the reference cell, pair by pair, each multiplier with its own
    interval (whatever the law's exponents), and one sentence on the pair that transfers most."""
    have = sorted((p for p in pairs if np.isfinite(p.measured)), key=lambda p: -p.measured)
    above = [p for p in have if p.measured_ci[0] > 1]
    where = f"N = {fmt_size(ref['N'])} with {fmt_chars(ref['D_F'])} target characters"
    if not have:
        return ["## What transfers, measured", "", f"No pair has a measured multiplier at {where} yet.", ""]
    top = have[0]
    out = ["## What transfers, measured", "",
           f"At {where}, pre-training on {top.source} is worth {_g(top.measured)}× {_iv(top.measured_ci)} the "
           f"{top.target} data fine-tuned on, the most of any pair; in {len(above)} of {len(have)} pairs the measured "
           "multiplier's interval lies above 1.", "",
           "The multiplier (D_F + D_T)/D_F measured at that cell (its D_E inverted through the target's from-scratch "
           "curve, one seed), with its own interval from the D_E bootstrap (both regimes redrawn), beside the law's "
           "prediction:", ""]
    rows = [[f"{p.source} → {p.target}", f"{_g(p.measured)} {_iv(p.measured_ci)}", p.measured_method,
             "yes" if p.measured_ci[0] > 1 else "no", f"{_g(p.multiplier)} {_iv(p.multiplier_ci)}",
             "yes" if p.identified.get("alpha") and p.identified.get("beta") else "no"] for p in have]
    return out + md_table(["source → target", "measured multiplier", "D_E", "excludes 1", "law's multiplier",
                           "α and β identified"], rows)


def _estimate(p: PairResult, name: str) -> str:
    if name in p.at_bounds:  # the fit ran into the edge of the allowed range: the data do not hold it
        return f"at its bound ({_g(p.params.get(name))}): not estimated"
    return f"{_g(p.params.get(name))} {_iv(p.ci.get(name, (np.nan,) * 2))}"


def _pairs_frame(pairs: list[PairResult]) -> pd.DataFrame:
    rows = []
    for p in pairs:
        rows.append({"source": p.source, "target": p.target, "law": p.law, "points": p.n_points,
                     "interpolated_points": p.interpolated_points, "model_based_points": p.model_based_points,
                     **{k: p.params.get(k, np.nan) for k in ("k", "alpha", "beta")},
                     **{f"{k}_lo": p.ci.get(k, (np.nan, np.nan))[0] for k in ("k", "alpha", "beta")},
                     **{f"{k}_hi": p.ci.get(k, (np.nan, np.nan))[1] for k in ("k", "alpha", "beta")},
                     "multiplier": p.multiplier, "multiplier_lo": p.multiplier_ci[0], "multiplier_hi": p.multiplier_ci[1],
                     "measured_multiplier": p.measured, "measured_lo": p.measured_ci[0],
                     "measured_hi": p.measured_ci[1], "measured_method": p.measured_method,
                     "D_T": p.d_t, "D_T_lo": p.d_t_ci[0], "D_T_hi": p.d_t_ci[1],
                     "alpha_identified": p.identified.get("alpha", False),
                     "beta_identified": p.identified.get("beta", False), "at_bounds": ";".join(p.at_bounds)})
    return pd.DataFrame(rows)


def _heatmaps(pairs: list[PairResult], corpora: list[str], ref: dict, plots: Path) -> list[tuple[str, Path]]:
    return [("α (directed proximity of source to target)",
             heatmap(pairs, corpora, lambda p: p.params.get("alpha", np.nan), lambda p: p.ci.get("alpha", (np.nan,) * 2),
                     lambda p: not p.identified.get("alpha", False),
                     "α: D_T ∝ D_F^α (hatched: interval covers 0 or is wider than 0.5)", plots, "alpha")),
            (f"Effective data multiplier at N = {ref['N']:.3g}, D_F = {ref['D_F']:.3g}",
             heatmap(pairs, corpora, lambda p: p.multiplier, lambda p: p.multiplier_ci,
                     lambda p: not p.identified.get("alpha", False) or not p.identified.get("beta", False),
                     f"multiplier (D_F+D_T)/D_F at N={ref['N']:.3g}, D_F={ref['D_F']:.3g} (hatched: α or β unidentified)",
                     plots, "multiplier", log=True))]


def _pairs_section(pairs: list[PairResult]) -> list[str]:
    return ["## Pairs", ""] + md_table(
        ["source → target", "law", "points (interp./model)", "k", "α", "β", "multiplier (law)",
         "multiplier (measured)", "D_T (law)", "misfit against the noise"],
        [[f"{p.source} → {p.target}", p.law, f"{p.n_points} ({p.interpolated_points}/{p.model_based_points})",
          *[_estimate(p, name) for name in ("k", "alpha", "beta")],
          f"{_g(p.multiplier)} {_iv(p.multiplier_ci)}", f"{_g(p.measured)} {_iv(p.measured_ci)}",
          f"{_g(p.d_t)} {_iv(p.d_t_ci)}", p.goodness.brief() if p.goodness is not None else "—"] for p in pairs])


def _asymmetry(pairs: list[PairResult], corpora: list[str]) -> list[str]:
    lines = ["## Asymmetry (A → B against B → A)", "",
             "Transfer is directed: the multiplier of A → B over that of B → A, and the difference of α.", ""]
    by = {(p.source, p.target): p for p in pairs}
    asym = []
    for i, a in enumerate(corpora):
        for b in corpora[i + 1:]:
            ab, ba = by.get((a, b)), by.get((b, a))
            if ab is None or ba is None:
                continue
            ratio = ab.multiplier / ba.multiplier if np.isfinite(ab.multiplier) and np.isfinite(ba.multiplier) else np.nan
            dalpha = ab.params.get("alpha", np.nan) - ba.params.get("alpha", np.nan)
            apart = ab.multiplier_ci[0] > ba.multiplier_ci[1] or ab.multiplier_ci[1] < ba.multiplier_ci[0]
            asym.append([f"{a} ↔ {b}", f"{_g(ab.multiplier)} / {_g(ba.multiplier)}", _g(ratio), _g(dalpha),
                         "yes" if apart else "no"])
    return lines + md_table(["pair", "multiplier A→B / B→A", "ratio", "α(A→B) − α(B→A)", "intervals apart"], asym)


def atlas_markdown(study: AtlasStudy, corpora: list[str], figs: list[tuple[str, Path]], out: Path) -> str:
    pairs, ref, settings = study.pairs, study.ref, study.settings
    L = [f"# Transfer atlas: sweep `{study.sweep}`", ""] + measured_cells(pairs, ref)
    L += ["## How it was measured", "",
          f"{len(pairs)} ordered pairs of {len(corpora)} corpora ({', '.join(corpora)}). Per pair: the transfer law "
          "D_T = k·D_F^α·N^β fitted on interpolated D_E where it can be (law `transfer`), else the unified law fitted "
          "jointly on scratch and fine-tuned losses (law `unified`, model-based). Intervals: "
          f"{settings['n_bootstrap']} bootstrap resamples of whole runs, {settings['ci']:.0%} percentile. Multiplier and "
          f"D_T at the reference N = {ref['N']:.3g}, D_F = {ref['D_F']:.3g} characters. No cell is repeated with "
          "other seeds, so no law's misfit can be tested against run noise here (the pairs table gives each misfit).", ""]
    if study.chars_per_token:
        L += [f"One tokenizer serves every corpus: `{settings.get('tokenizer')}`. Losses are nats per character, so "
              "pairs compare whatever the tokenizer does to each corpus:", ""]
        L += md_table(["corpus", "characters per token"], study.chars_per_token)
    L += ["## Checks against the literature", ""] + literature_checks(pairs) + [""]
    L += _pairs_section(pairs) + _asymmetry(pairs, corpora)
    L += ["## Heatmaps", ""]
    for title, png in figs:
        L += [f"### {title}", "", f"![{title}]({png.relative_to(out).as_posix()})", ""]
    notes = sorted({m for p in pairs for m in p.messages})
    if notes:
        L += ["## Messages from the pair analyses", ""] + [f"- {m}" for m in notes[:40]] + [""]
    return "\n".join(L) + "\n"


def write_atlas(study: AtlasStudy, out: Path, html: bool = True) -> Path:
    corpora = sorted({p.source for p in study.pairs} | {p.target for p in study.pairs})
    table = _pairs_frame(study.pairs)
    with staging.staged(out) as stage:
        table.to_csv(stage / "pairs.csv", index=False)
        md = atlas_markdown(study, corpora, _heatmaps(study.pairs, corpora, study.ref, stage / "plots"), stage)
        (stage / "atlas.md").write_text(md, encoding="utf-8")
        if html:  # images inline (~330 kB for 6 corpora): html=false for reports committed to docs/
            (stage / "atlas.html").write_text(markdown_to_html(md, stage), encoding="utf-8")
        (stage / "atlas.json").write_text(json.dumps({"sweep": study.sweep, "reference": study.ref,
                                                      "settings": study.settings,
                                                      "pairs": table.replace({np.nan: None}).to_dict("records")},
                                                     indent=2), encoding="utf-8")
    return out / "atlas.md"
