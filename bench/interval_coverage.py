"""How often do the analysis's 95% intervals hold the truth? Synthetic paper-like sweeps (Kaplan's
from-scratch law, the transfer law on top: tests/analysis_synth.py) at several noise levels, each
drawn many times and analysed as a user's sweep would be.

    python bench/interval_coverage.py                       # 12 draws per noise level, ~6 min
    python bench/interval_coverage.py --draws 20 --out docs/results/interval_coverage

Two designs per noise level: one seed per cell (the noise is inferred from the fit's residuals), and
the cheap cells (D, D_F ≤ 1e5) repeated with 3 seeds, so the analysis measures the run-to-run noise
per regime and N and resamples with it. Writes coverage.md (and prints it): per design, noise level
and law, how many draws' intervals hold the true k, α, β, the median interval width, and the mean
estimate against the truth (its bias).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import analysis_synth as syn  # noqa: E402

from transfer_lab.analysis import collect_local, run_analysis  # noqa: E402
from transfer_lab.analysis.report.sweep_report import md_table  # noqa: E402

GRID = dict(ns=(1e5, 3e5, 1e6, 3e6, 1e7), scratch_ds=tuple(np.geomspace(1e4, 1e11, 15)),
            finetune_ds=tuple(np.geomspace(1e4, 1e6, 7)))
LAWS = {"transfer": "interpolated transfer law", "unified": "unified law (model-based)"}


def draw_sweep(folder: str, noise: float, replicates: int, seed: int) -> None:
    if replicates == 1:
        syn.make_sweep(folder, sweep="v", extras=False, seed=seed, noise=noise, **GRID)
    else:  # one pre-training budget whose transfer constants are the truth: budget_transfer(1e8) == TRANSFER
        syn.write_runs(folder, "v", syn.make_budget_runs("v", budgets=(1e8,), noise=noise, replicates=replicates,
                                                         seed=seed, **GRID))


def coverage(noise: float, replicates: int, draws: int, n_bootstrap: int) -> dict:
    found = {law: {name: [] for name in syn.TRANSFER} for law in LAWS}
    for draw in range(draws):
        folder = tempfile.mkdtemp(prefix="coverage-")
        draw_sweep(folder, noise, replicates, seed=1000 + draw)
        res = run_analysis(collect_local(folder, "v"), n_bootstrap=n_bootstrap, seed=draw)
        for law in LAWS:
            fit = res.fit(law)
            if fit is None:
                continue
            for name in syn.TRANSFER:
                found[law][name].append((fit.params[name], *fit.ci[name]))
    return found


def table(results: dict, draws: int) -> list[str]:
    rows = []
    for (noise, replicates), found in results.items():
        design = "1 seed" if replicates == 1 else f"{replicates} seeds of the cheap cells"
        for law, by_name in found.items():
            for name, values in by_name.items():
                if not values:
                    rows.append([design, f"{noise:.1%}", LAWS[law], name, "not fitted", "", ""])
                    continue
                v = np.array(values)
                true = syn.TRANSFER[name]
                held = int(((v[:, 1] <= true) & (true <= v[:, 2])).sum())
                width = np.median(np.log10(v[:, 2] / v[:, 1]) if name == "k" else v[:, 2] - v[:, 1])
                estimate = np.exp(np.mean(np.log(v[:, 0]))) if name == "k" else np.mean(v[:, 0])
                rows.append([design, f"{noise:.1%}", LAWS[law], name, f"{held}/{len(v)}",
                             f"{width:.3g}{' decades' if name == 'k' else ''}", f"{estimate:.3g} (truth {true:g})"])
    return md_table(["design", "noise", "law", "parameter", "95% interval holds the truth", "median width", "mean estimate"],
                    rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=12)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.002, 0.005])
    parser.add_argument("--replicates", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--bootstrap", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = {(noise, reps): coverage(noise, reps, args.draws, args.bootstrap)
               for reps in args.replicates for noise in args.noise}
    lines = ["# Interval coverage on synthetic sweeps", "",
             f"{args.draws} draws per noise level of a paper-like sweep ({len(GRID['ns'])} sizes 1e5-1e7; from scratch "
             f"at {len(GRID['scratch_ds'])} D over 1e4-1e11; fine-tuned at {len(GRID['finetune_ds'])} D_F over 1e4-1e6; "
             "noise: the standard deviation of ln loss of every run), each analysed with "
             f"{args.bootstrap} bootstrap resamples. Designs: 1 seed per cell (the bootstrap perturbs single runs by the "
             "from-scratch law's residual), or 3 seeds of the cheap cells (fine-tunes and from-scratch runs at D ≤ 1e5: "
             "the bootstrap uses the measured seed noise). Command: "
             f"`python bench/interval_coverage.py --draws {args.draws} --noise {' '.join(str(n) for n in args.noise)} "
             f"--replicates {' '.join(str(r) for r in args.replicates)} --bootstrap {args.bootstrap}`.", ""]
    lines += table(results, args.draws)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "coverage.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
