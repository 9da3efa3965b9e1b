"""A run's learning-rate schedule and stopping rule, sized to the run itself, not to a global cap.

Hernandez et al. name two flaws of their own protocol: small fine-tuning sets early-stopped
inside warm-up, and one schedule served every subset. A cosine that spans a fixed step cap leaves
a small subset early-stopping while the LR is near its peak; a cosine sized by epochs misjudges
both tiny models (still improving after 100 epochs) and pre-trained ones (over-fitting in ten
steps). So a scratch or fine-tune run finds its own horizon (warm-up, stable, decay: the
trapezoid Hägele et al. 2024 find as good as a cosine whose length is known in advance):

  warm-up   linear over min(warmup_steps, warmup_epochs passes over the subset)
  stable    peak LR while the loss on the stopping set still improves
  decay     after `patience` validations without improvement, spanning at least
            `patience_fraction` of the steps so far, the run goes back to its best weights and
            multiplies the LR by `decay`, until it reaches min_lr_ratio·lr (anneal_window=phase:
            an annealed phase's window spans that fraction of its own steps, not of the run's)
  stop      the next plateau at the floor ends the run: its best validation is a converged
            early-stopping point. `max_steps` is only a ceiling: a run that reaches it did not
            stop, and its record says converged: false
  validate  every `val_every_epochs` passes over the subset, within [min_val_every_n_steps,
            val_every_n_steps]: a small subset is watched closely, a large one every 100 steps

e.g. 1e4 characters of Python with BPE-512 ≈ 5,500 tokens ≈ 2.7 steps of 16 × 128 an epoch:
warm-up min(50, 2 × 2.7) = 6 steps, a validation every max(5, 2.7) = 5 steps.

Pre-training has a fixed budget instead (the budget is what a study varies): warm-up, then a
cosine over the budget down to min_lr_ratio·lr.

kind="cosine" gives target runs the paper's protocol instead, kept for comparison (docs/results/
schedule_ablation): one cosine over max_steps whatever the subset, and the first plateau stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StoppingRule:
    """How a target run's schedule follows its subset (conf/optim, with conf/finetune for fine-tunes)."""

    lr: float
    warmup_steps: int
    warmup_epochs: float
    kind: str  # plateau | cosine
    decay: float
    min_lr_ratio: float
    patience: int
    patience_fraction: float
    min_rel_improvement: float
    val_every_epochs: float
    min_val_every_n_steps: int
    val_every_n_steps: int
    max_steps: int
    anneal_window: str = "run"  # run | phase: an annealed phase's patience window counts from step 0 or from its anneal


@dataclass(frozen=True)
class Schedule:
    lr: float
    warmup_steps: int
    min_lr_ratio: float
    max_steps: int  # the ceiling (a fixed budget: the budget)
    val_every_n_steps: int
    patience: int  # validations without improvement (counted after warm-up) that make a plateau...
    min_rel_improvement: float
    decay: float | None  # LR × decay at each plateau down to min_lr_ratio; None: a plateau stops the run
    horizon_steps: int | None = None  # fixed budgets: the cosine reaches min_lr_ratio here
    patience_fraction: float = 0.0  # ...and for at least this fraction of the steps trained so far

    fixed_budget: bool = False  # pre-training: reaching max_steps is the plan, not a missed stop
    anneal_window: str = "run"  # run | phase (PlateauSchedule)
    stop_at_floor: bool = True  # a plateau with no anneal left stops the run (False: on to max_steps)

    def lr_factor(self, step: int, scale: float = 1.0) -> float:
        return lr_factor(step, self.warmup_steps, self.horizon_steps, self.min_lr_ratio) * scale


def lr_factor(step: int, warmup_steps: int, horizon_steps: int | None, min_ratio: float) -> float:
    """Linear warm-up to 1; then 1 (a run that finds its horizon) or a cosine down to `min_ratio`
    (10% of peak, as Kim 2021) at `horizon_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if horizon_steps is None:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, horizon_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def n_decays(decay: float, min_lr_ratio: float) -> int:
    """Plateaus that anneal before the one that stops: 0.1 → 1 decay to a 0.1 floor, 0.316 → 2."""
    return max(0, math.ceil(math.log(min_lr_ratio) / math.log(decay) - 1e-9)) if decay < 1 else 0


def size_schedule(rule: StoppingRule, subset_tokens: int, tokens_per_step: int) -> Schedule:
    """The schedule of a scratch or fine-tune run over `subset_tokens` training tokens."""
    steps_per_epoch = subset_tokens / tokens_per_step
    warmup = min(rule.warmup_steps, math.ceil(rule.warmup_epochs * steps_per_epoch))
    every = math.ceil(rule.val_every_epochs * steps_per_epoch)
    every = min(max(every, rule.min_val_every_n_steps), rule.val_every_n_steps, rule.max_steps)
    cosine = rule.kind == "cosine"  # the paper's protocol: one cosine over the cap, first plateau stops
    return Schedule(lr=rule.lr, warmup_steps=warmup, min_lr_ratio=rule.min_lr_ratio, max_steps=rule.max_steps,
                    val_every_n_steps=every, patience=rule.patience, min_rel_improvement=rule.min_rel_improvement,
                    decay=None if cosine else rule.decay, patience_fraction=rule.patience_fraction,
                    horizon_steps=rule.max_steps if cosine else None, anneal_window=rule.anneal_window)


ON_PLATEAU = ("continue", "anneal", "stop")


def fixed_budget(lr: float, warmup_steps: int, budget_steps: int, min_lr_ratio: float, val_every_n_steps: int,
                 patience: int, min_rel_improvement: float, on_plateau: str = "continue",
                 decay: float = 10 ** -0.5) -> Schedule:
    """Pre-training: warm-up and a cosine over the budget, trained to its end. At a plateau on the
    source: `continue` changes nothing; `anneal` goes back to the best weights with the LR × decay
    (down to min_lr_ratio) and trains on; `stop` ends the run there (the old rule: a larger budget
    stopped at a high LR could end worse than a smaller one)."""
    if on_plateau not in ON_PLATEAU:
        raise ValueError(f"on_plateau={on_plateau!r}: one of {ON_PLATEAU}")
    return Schedule(lr=lr, warmup_steps=min(warmup_steps, budget_steps), min_lr_ratio=min_lr_ratio,
                    max_steps=budget_steps, val_every_n_steps=min(val_every_n_steps, budget_steps),
                    patience=patience, min_rel_improvement=min_rel_improvement,
                    decay=decay if on_plateau == "anneal" else None, horizon_steps=budget_steps,
                    fixed_budget=True, stop_at_floor=on_plateau == "stop")
