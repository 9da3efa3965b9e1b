"""Figures of the report, each saved as PNG and PDF. Every function returns the PNG path or None."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from transfer_lab.analysis.fit import laws  # noqa: E402


def _save(fig, out: Path, name: str, res) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    fig.savefig(png, dpi=110, bbox_inches="tight")
    if res.settings.get("pdf", True):  # off for the light reports committed under docs/results
        fig.savefig(out / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)
    return png


def _colors(ns):
    cmap = plt.get_cmap("viridis")
    ns = sorted(ns)
    return {n: cmap(i / max(1, len(ns) - 1) * 0.9) for i, n in enumerate(ns)}


def _rows(res):
    """Usable scratch and fine-tuned runs; with several pre-training budgets, the fine-tunes of the
    largest (the headline's; the budget plots show the others)."""
    t = res.table[~res.table["excluded"]]
    ft = t[t["regime"] == "finetune"]
    if ft["pretrain_budget"].nunique() > 1:
        ft = ft[ft["pretrain_budget"] == res.main_budget]
    return t[t["regime"] == "scratch"], ft


def transfer_vs_budget(res, out: Path):
    """D_T and the multiplier against the pre-training budget p, one line per N, a panel per D_F."""
    study = res.budgets
    if study is None or not len(study.transferred):
        return None
    dt = study.transferred
    d_fs = sorted(dt["D_F"].unique())
    col = _colors(dt["N"].unique())
    fig, axes = plt.subplots(2, len(d_fs), figsize=(3.2 * len(d_fs), 6), squeeze=False)
    for j, d_f in enumerate(d_fs):
        for n, g in dt[dt["D_F"] == d_f].groupby("N"):
            g = g.sort_values("budget")
            axes[0, j].plot(g["budget"], g["D_T"].where(g["D_T"] > 0), "-o", ms=3, color=col[n], label=f"N={n:.2g}")
            axes[1, j].plot(g["budget"], g["multiplier"], "-o", ms=3, color=col[n])
        axes[0, j].set(xscale="log", yscale="log", title=f"D_F = {d_f:.2g}", ylabel="D_T (chars)" if j == 0 else None)
        axes[1, j].set(xscale="log", yscale="log", xlabel="pre-training budget p (chars)",
                       ylabel="multiplier (D_F + D_T)/D_F" if j == 0 else None)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("What pre-training buys, by budget (D_T ≤ 0 not drawn)")
    fig.tight_layout()
    return _save(fig, out, "transfer_vs_budget", res)


def exponents_vs_budget(res, out: Path):
    """α and β of the transfer and unified laws at each budget, with their intervals."""
    study = res.budgets
    if study is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for law, marker, shift in (("transfer", "o", 0.97), ("unified", "s", 1.03)):
        for ax, name in zip(axes, ("alpha", "beta")):
            pts = [(e["budget"], e[law].params[name], e[law].ci.get(name, (np.nan, np.nan)))
                   for e in study.per_budget if e.get(law) is not None and e[law].ok]
            if not pts:
                continue
            b, v, ci = zip(*pts)
            lo, hi = np.array([c[0] for c in ci]), np.array([c[1] for c in ci])
            ax.errorbar(np.array(b) * shift, v, yerr=[np.array(v) - lo, hi - np.array(v)], fmt=marker, ms=4,
                        capsize=2, label=law)
    for ax, symbol in zip(axes, ("α", "β")):
        ax.axhline(0, color="grey", lw=0.6)
        ax.set(xscale="log", xlabel="pre-training budget p (chars)", ylabel=symbol, title=f"{symbol} by budget")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out, "exponents_vs_budget", res)


def held_out(res, out: Path):
    """Held-out runs: the prediction with its interval against the measured value (loss and D_T)."""
    study = res.budgets
    if study is None or not len(study.held_out):
        return None
    held = study.held_out
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (value, pred, ci, label) in zip(axes, (("loss", "loss_predicted", "loss_ci", "loss (nats/char)"),
                                                   ("D_T", "D_T_predicted", "D_T_ci", "D_T (chars)"))):
        for what, g in held.groupby("held_out"):
            lo, hi = np.array([c[0] for c in g[ci]]), np.array([c[1] for c in g[ci]])
            p = g[pred].to_numpy(float)
            ax.errorbar(g[value], p, yerr=[np.clip(p - lo, 0, None), np.clip(hi - p, 0, None)], fmt="o", ms=4,
                        capsize=2, label=what)
        lim = [np.nanmin(held[[value, pred]].to_numpy(float)), np.nanmax(held[[value, pred]].to_numpy(float))]
        ax.plot(lim, lim, color="grey", lw=0.6)
        ax.set(xlabel=f"measured {label}", ylabel=f"predicted {label}", title=f"held out: {value}")
        if value == "D_T":
            ax.set(xscale="log", yscale="log")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, out, "held_out", res)


def loss_vs_data(res, out: Path, loss_label: str):
    scratch, ft = _rows(res)
    if not len(scratch) and not len(ft):
        return None
    col = _colors(set(scratch["N"]) | set(ft["N"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for n, g in scratch.groupby("N"):
        g = g.sort_values("D_F")
        ax.plot(g["D_F"], g["loss"], "-o", ms=3, color=col[n], label=f"scratch N={n:.2g}")
    for n, g in ft.groupby("N"):
        g = g.sort_values("D_F")
        ax.plot(g["D_F"], g["loss"], "--s", ms=3, color=col[n], mfc="none", label=f"fine-tuned N={n:.2g}")
    ax.set(xscale="log", xlabel="characters of target data (D for scratch, D_F for fine-tuned)",
           ylabel=loss_label, title="Loss vs target data (cf. Hernandez et al. Fig. 1/3)")
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, out, "loss_vs_data", res)


def _transfer_curve(ax, fit, group, n, color, quantity) -> None:
    """The fitted transfer law at size n over the group's D_F range, as quantity(D_F, D_T)."""
    if fit is None:
        return
    d = np.geomspace(group["D_F"].min(), group["D_F"].max(), 50)
    dt = laws.transfer_dt(d, n, fit.params["k"], fit.params["alpha"], fit.params["beta"])
    ax.plot(d, quantity(d, dt), "-", color=color, lw=1)


def _fine_tuned_by_size(res, column: str):
    """(figure, axes, transfer fit, [(N, rows, colour)]) over fine-tuned rows with `column`, or None."""
    _, ft = _rows(res)
    ft = ft[ft[column].notna()]
    if not len(ft):
        return None
    col = _colors(set(ft["N"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    return fig, ax, res.fit("transfer"), [(n, g, col[n]) for n, g in ft.groupby("N")]


def dt_vs_df(res, out: Path):
    panel = _fine_tuned_by_size(res, "D_T")
    if panel is None:
        return None
    fig, ax, fit, sizes = panel
    for n, g, color in sizes:
        model = g["flags"].str.contains("model_based", na=False) & (g["D_T"] > 0)
        use, skip = g[g["in_transfer_fit"]], g[~g["in_transfer_fit"] & ~model & (g["D_T"] > 0)]
        ax.plot(use["D_F"], use["D_T"], "o", color=color, label=f"N={n:.2g}")
        ax.plot(skip["D_F"], skip["D_T"], "x", color=color)
        mb = g[model]
        if len(mb):
            err = np.vstack([mb["D_T"] - mb["D_T_lo"].fillna(mb["D_T"]), mb["D_T_hi"].fillna(mb["D_T"]) - mb["D_T"]])
            ax.errorbar(mb["D_F"], mb["D_T"], yerr=np.clip(err, 0, None), fmt="o", mfc="none", color=color, capsize=2)
        _transfer_curve(ax, fit, g, n, color, lambda d, dt: dt)
    title = "D_T vs D_F (●: interpolated, fitted; ○: model-based (unified law) ± interval; x: flagged)"
    if fit is not None:
        p = fit.params
        title += f"\nfit: k={p['k']:.3g}, α={p['alpha']:.3f}, β={p['beta']:.3f}"
    ax.set(xscale="log", yscale="log", xlabel="D_F (characters)", ylabel="D_T = D_E − D_F (characters)", title=title)
    ax.legend(fontsize=7)
    return _save(fig, out, "dt_vs_df", res)


def multiplier(res, out: Path):
    panel = _fine_tuned_by_size(res, "multiplier")
    if panel is None:
        return None
    fig, ax, fit, sizes = panel
    for n, g, color in sizes:
        ax.plot(g["D_F"], g["multiplier"], "o", color=color, label=f"N={n:.2g}")
        _transfer_curve(ax, fit, g, n, color, laws.effective_multiplier)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="D_F (characters)", ylabel="effective data multiplier (D_F+D_T)/D_F",
           title="Effective data multiplier")
    ax.legend(fontsize=7)
    return _save(fig, out, "multiplier", res)


def loss_vs_compute(res, out: Path, loss_label: str):
    scratch, ft = _rows(res)
    if not len(ft) and not len(scratch):
        return None
    col = _colors(set(scratch["N"]) | set(ft["N"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, with_pre in zip(axes, (False, True)):
        for n, g in scratch.groupby("N"):
            ax.plot(g["train_flops"], g["loss"], "o", ms=3, color=col[n], alpha=0.5)
        for n, g in ft.groupby("N"):
            c = g["train_flops"] + (g["pretrain_flops"].fillna(0) if with_pre else 0)
            ax.plot(c, g["loss"], "s", ms=4, mfc="none", color=col[n], label=f"fine-tuned N={n:.2g}")
        ax.set(xscale="log", xlabel="training FLOPs" + (" incl. pre-training" if with_pre else " (fine-tuning only)"),
               title=("with" if with_pre else "without") + " pre-training compute (o: scratch)")
    axes[0].set_ylabel(loss_label)
    axes[0].legend(fontsize=6)
    return _save(fig, out, "loss_vs_compute", res)


def predicted_vs_observed(res, out: Path):
    items = [(f.title.split(":")[0].split(" L")[0][:40], [f]) for f in res.fits.values() if f.ok]
    for name, fs in res.group_fits.items():
        ok = [f for f in fs if f.ok]
        if ok:
            items.append((f"{name} (per group)", ok))
    if not items:
        return None
    cols = min(3, len(items))
    rows = int(np.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax, (name, fs) in zip(axes.ravel(), items):
        obs = np.concatenate([f.observed for f in fs])
        pred = np.concatenate([f.predicted for f in fs])
        ax.plot(obs, pred, ".", ms=4)
        lo, hi = np.nanmin([obs.min(), pred.min()]), np.nanmax([obs.max(), pred.max()])
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.7)
        ax.set(title=name, xlabel=f"observed {fs[0].spec.target}", ylabel="predicted")
        ax.title.set_fontsize(8)
    for ax in axes.ravel()[len(items):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, out, "predicted_vs_observed", res)


def make_all(res, out: Path, loss_label: str = "loss (nats/char)") -> list[tuple[str, Path]]:
    figs = [("Loss vs target data", loss_vs_data(res, out, loss_label)), ("D_T vs D_F", dt_vs_df(res, out)),
            ("Effective data multiplier", multiplier(res, out)),
            ("Loss vs compute", loss_vs_compute(res, out, loss_label)),
            ("Predicted vs observed (log space)", predicted_vs_observed(res, out)),
            ("What pre-training buys, by budget", transfer_vs_budget(res, out)),
            ("α and β by pre-training budget", exponents_vs_budget(res, out)),
            ("Held-out runs: predicted vs measured", held_out(res, out))]
    return [(t, p) for t, p in figs if p is not None]
