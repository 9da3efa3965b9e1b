"""Synthetic sweeps for the analysis tests: real results.json files generated from known laws.

From scratch: Kaplan's L(N, D); fine-tuned: the same law at D_F + k·D_F^α·N^β (the unified
law), optionally with a transfer-gap budget dependence. Losses are nats/char; noise is
multiplicative (ln L + ε).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # plain `pytest` without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transfer_lab.analysis.fit import laws
from transfer_lab.study import records

KAPLAN = {"n_c": 1e8, "d_c": 3e8, "alpha_n": 0.076, "alpha_d": 0.103}
TRANSFER = {"k": 5e3, "alpha": 0.25, "beta": 0.42}
NS = (1e5, 3e5, 1e6, 3e6, 1e7)
SCRATCH_DS = tuple(np.geomspace(1e4, 3e9, 8))
FINETUNE_DS = tuple(np.geomspace(1e4, 1e6, 12))


def scratch_loss(n, d):
    return laws.kaplan_loss(n, d, **KAPLAN)


def finetune_loss(n, d_f, transfer=TRANSFER):
    return laws.kaplan_loss(n, d_f + laws.transfer_dt(d_f, n, **transfer), **KAPLAN)


def result(sweep, key, regime, n, d, loss, **kw) -> records.RunResult:
    base = dict(run_key=key, sweep=sweep, regime=regime, status="done", tokenizer="bpe-512-abc",
                val_set="val-python-1", target_corpus="python", source_corpus="text",
                non_embedding_params=int(n), total_params=int(n * 1.2), finetune_chars=None if d is None else int(d),
                finetune_tokens=None if d is None else int(d / 3), best_val_loss=None if loss is None else loss * 3,
                best_val_loss_per_char=loss, best_val_bits_per_char=None if loss is None else loss / np.log(2),
                steps=1000, tokens_seen=int(1e6), train_flops=6.0 * n * 1e6 * (1 + (d or 0) / 1e6))
    if regime == "finetune":
        base.update(pretrain_key=f"pre-N{n:.0e}", pretrain_chars=int(1e9), pretrain_tokens=int(3e8),
                    pretrain_flops=6.0 * n * 3e8)
    base.update(kw)
    return records.RunResult(**base)


def write_runs(root: Path, sweep: str, runs: list[records.RunResult]) -> Path:
    sweep_dir = Path(root) / "sweeps" / sweep
    for r in runs:
        records.write_result(sweep_dir / "runs" / r.run_key, r)
    return sweep_dir


def make_runs(sweep="synth", ns=NS, scratch_ds=SCRATCH_DS, finetune_ds=FINETUNE_DS, noise=0.0,
              scratch_noise=None, seed=0, transfer=TRANSFER, extras=True) -> list[records.RunResult]:
    rng = np.random.default_rng(seed)
    sn = noise if scratch_noise is None else scratch_noise
    runs = []
    for n in ns:
        for d in scratch_ds:
            loss = float(scratch_loss(n, d) * np.exp(rng.normal(0, sn)))
            runs.append(result(sweep, f"scratch-N{n:.0e}-D{d:.2e}", "scratch", n, d, loss))
        for d in finetune_ds:
            loss = float(finetune_loss(n, d, transfer) * np.exp(rng.normal(0, noise)))
            runs.append(result(sweep, f"ft-N{n:.0e}-D{d:.2e}", "finetune", n, d, loss))
    if extras:
        runs.append(result(sweep, "ft-failed", "finetune", ns[0], finetune_ds[0], None, status="failed",
                           error="CUDA out of memory"))
        runs.append(result(sweep, "pre-N1e+05", "pretrain", ns[0], None, 1.5, val_set="val-text-1"))
    return runs


def make_sweep(root: Path, sweep="synth", **kw) -> Path:
    return write_runs(root, sweep, make_runs(sweep, **kw))


def make_atlas_runs(sweep: str, pairs: dict[tuple[str, str], dict], ns=(1e5, 1e6, 1e7),
                    scratch_ds=tuple(np.geomspace(1e4, 1e11, 12)), finetune_ds=tuple(np.geomspace(1e4, 1e6, 5)),
                    noise=0.003, seed=0) -> list[records.RunResult]:
    """An atlas sweep: one scratch curve per target (shared by every source), fine-tunes per ordered
    pair from `pairs` {(source, target): transfer constants}; each target has its own validation set."""
    rng = np.random.default_rng(seed)
    runs = []
    targets = sorted({t for _, t in pairs})
    for t in targets:
        for n in ns:
            for d in scratch_ds:
                loss = float(scratch_loss(n, d) * np.exp(rng.normal(0, noise)))
                runs.append(result(sweep, f"scratch-{t}-N{n:.0e}-D{d:.2e}", "scratch", n, d, loss, target_corpus=t,
                                   val_set=f"val-{t}", source_corpus=None))
    for (s, t), transfer in pairs.items():
        for n in ns:
            for d in finetune_ds:
                loss = float(finetune_loss(n, d, transfer) * np.exp(rng.normal(0, noise)))
                runs.append(result(sweep, f"ft-{s}-{t}-N{n:.0e}-D{d:.2e}", "finetune", n, d, loss, target_corpus=t,
                                   source_corpus=s, val_set=f"val-{t}", pretrain_key=f"pre-{s}-N{n:.0e}"))
    return runs


def budget_transfer(budget: float) -> dict:
    """Transfer that grows with the pre-training budget: k ∝ p^0.4 (p in characters)."""
    return {**TRANSFER, "k": TRANSFER["k"] * (budget / 1e8) ** 0.4}


def make_budget_runs(sweep="budgets", ns=(1e5, 1e6, 1e7), budgets=(1e7, 3e7, 1e8, 3e8),
                     scratch_ds=tuple(np.geomspace(1e4, 1e11, 12)), finetune_ds=tuple(np.geomspace(1e4, 1e6, 5)),
                     noise=0.003, replicates=3, seed=0) -> list[records.RunResult]:
    """A budget study: one from-scratch curve per N shared by every budget, fine-tunes per (N, budget,
    D_F); the cheap cells (scratch D ≤ 1e5, fine-tunes at the smallest budget and D_F ≤ 1e5) are
    repeated with `replicates` seeds, so seed noise is measured per regime and N."""
    rng = np.random.default_rng(seed)
    runs = []
    for n in ns:
        for d in scratch_ds:
            for s in range(replicates if d <= 1e5 else 1):
                loss = float(scratch_loss(n, d) * np.exp(rng.normal(0, noise)))
                runs.append(result(sweep, f"scratch-N{n:.0e}-D{d:.2e}-s{s}", "scratch", n, d, loss, seed=s))
        for b in budgets:
            for d in finetune_ds:
                for s in range(replicates if b == budgets[0] and d <= 1e5 else 1):
                    loss = float(finetune_loss(n, d, budget_transfer(b)) * np.exp(rng.normal(0, noise)))
                    runs.append(result(sweep, f"ft-N{n:.0e}-p{b:.0e}-D{d:.2e}-s{s}", "finetune", n, d, loss, seed=s,
                                       pretrain_key=f"pre-N{n:.0e}-p{b:.0e}-s{s}", pretrain_chars=int(b),
                                       pretrain_tokens=int(b / 3), pretrain_budget_chars=int(b),
                                       pretrain_budget_tokens=int(b / 3)))
    return runs


# the truth: transfer peaks at this mixture; on the english-code edge (german 0) at r = 0.6 code, since
# (0.7 − r)² + (r − 0.5)² is least there
MIX_OPTIMUM = {"code_nonpython": 0.5, "english": 0.3, "german": 0.2}
EDGE_OPTIMUM_R = 0.6
SHAPES = {1e5: (2, 64, 2), 1e6: (4, 144, 4), 1e7: (8, 320, 8)}


def mix_transfer(weights: dict, optimum: dict = MIX_OPTIMUM, width: float = 0.6) -> dict:
    """Transfer whose k peaks at the `optimum` mixture: k·exp(−|w − w*|²/width²)."""
    names = set(weights) | set(optimum)
    distance = sum((weights.get(s, 0.0) - optimum.get(s, 0.0)) ** 2 for s in names)
    return {**TRANSFER, "k": TRANSFER["k"] * 3 * np.exp(-distance / width ** 2)}


def make_mix_runs(sweep="mix", ns=(1e5, 1e6, 1e7), ratios=(0.0, 0.25, 0.5, 0.75, 1.0),
                  finetune_ds=(1e4, 3e4, 1e5), scratch_ds=tuple(np.geomspace(1e4, 1e11, 12)), noise=0.002, seed=0,
                  simplex=(), verify=()) -> list[records.RunResult]:
    """A mix study: the Python curve per N, fine-tunes from english/code_nonpython mixtures at every ratio
    (truth: MIX_OPTIMUM), `simplex` mixtures {source: weight} at the smallest N and held-out `verify`
    runs [(N, weights)] launched as experiment=mix_verify, each at every D_F."""
    rng = np.random.default_rng(seed)
    runs = []

    def finetune(n, w, experiment):
        w = {s: v / sum(w.values()) for s, v in sorted(w.items()) if v > 0}
        label = "+".join(f"{s}{v:.2f}" for s, v in w.items())
        for d in finetune_ds:
            loss = float(finetune_loss(n, d, mix_transfer(w)) * np.exp(rng.normal(0, noise)))
            runs.append(result(sweep, f"ft-{experiment}-N{n:.0e}-{label}-D{d:.0e}", "finetune", n, d, loss,
                               source_corpus="+".join(w), source_weights=w, experiment=experiment,
                               pretrain_key=f"pre-N{n:.0e}-{label}", **_shape(n)))

    for n in ns:
        for d in scratch_ds:
            loss = float(scratch_loss(n, d) * np.exp(rng.normal(0, noise)))
            runs.append(result(sweep, f"scratch-N{n:.0e}-D{d:.2e}", "scratch", n, d, loss, source_corpus=None,
                               experiment="mix_text_code_python", **_shape(n)))
        for r in ratios:
            finetune(n, {"english": 1 - r, "code_nonpython": r}, "mix_text_code_python")
    for w in simplex:
        finetune(ns[0], w, "mix_simplex_python")
    for n, w in verify:
        finetune(n, w, "mix_verify")
    return runs


def _shape(n: float) -> dict:
    n_layer, n_embd, n_head = SHAPES.get(n, (1, 16, 2))
    return {"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head}
