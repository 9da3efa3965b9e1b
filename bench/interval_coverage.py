"""How often do the analysis's 95% intervals hold the truth? Synthetic paper-like sweeps (Kaplan's
from-scratch law, the transfer law on top: tests/analysis_synth.py) at several noise levels, each
drawn many times and analysed as a user's sweep would be.

    python bench/interval_coverage.py                       # 12 draws per noise level, ~3 min
    python bench/interval_coverage.py --draws 40 --out docs/results/interval_coverage

Writes coverage.md (and prints it): per noise level and law, how many draws' intervals hold the
true k, α, β, the median interval width, and the mean estimate against the truth (its bias).
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
from transfer_lab.analysis.report import md_table  # noqa: E402

GRID = dict(ns=(1e5, 3e5, 1e6, 3e6, 1e7), scratch_ds=tuple(np.geomspace(1e4, 1e11, 15)),
            finetune_ds=tuple(np.geomspace(1e4, 1e6, 7)))
LAWS = {"transfer": "interpolated transfer law", "unified": "unified law (model-based)"}


def coverage(noise: float, draws: int, n_bootstrap: int) -> dict:
    found = {law: {name: [] for name in syn.TRANSFER} for law in LAWS}
    for draw in range(draws):
        folder = tempfile.mkdtemp(prefix="coverage-")
        syn.make_sweep(folder, sweep="v", extras=False, seed=1000 + draw, noise=noise, **GRID)
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
    for noise, found in results.items():
        for law, by_name in found.items():
            for name, values in by_name.items():
                if not values:
                    rows.append([f"{noise:.1%}", LAWS[law], name, "not fitted", "", ""])
                    continue
                v = np.array(values)
                true = syn.TRANSFER[name]
                held = int(((v[:, 1] <= true) & (true <= v[:, 2])).sum())
                width = np.median(np.log10(v[:, 2] / v[:, 1]) if name == "k" else v[:, 2] - v[:, 1])
                estimate = np.exp(np.mean(np.log(v[:, 0]))) if name == "k" else np.mean(v[:, 0])
                rows.append([f"{noise:.1%}", LAWS[law], name, f"{held}/{len(v)}",
                             f"{width:.3g}{' decades' if name == 'k' else ''}", f"{estimate:.3g} (truth {true:g})"])
    return md_table(["noise", "law", "parameter", "95% interval holds the truth", "median width", "mean estimate"],
                    rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=12)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.002, 0.005])
    parser.add_argument("--bootstrap", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = {noise: coverage(noise, args.draws, args.bootstrap) for noise in args.noise}
    lines = ["# Interval coverage on synthetic sweeps", "",
             f"{args.draws} draws per noise level of a paper-like sweep ({len(GRID['ns'])} sizes 1e5-1e7; from scratch "
             f"at {len(GRID['scratch_ds'])} D over 1e4-1e11; fine-tuned at {len(GRID['finetune_ds'])} D_F over 1e4-1e6; "
             f"one seed; noise: the standard deviation of ln loss of every run), each analysed with {args.bootstrap} "
             "bootstrap resamples. Command: `python bench/interval_coverage.py "
             f"--draws {args.draws} --noise {' '.join(str(n) for n in args.noise)} --bootstrap {args.bootstrap}`.", ""]
    lines += table(results, args.draws)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "coverage.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
