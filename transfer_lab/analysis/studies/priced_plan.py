"""analyze.py action=plan plan.budget_hours=H: which runs buy the most precision per hour.

  price     a cost model fitted to the sweep's own finished runs: process seconds per token as a
            power of N, and tokens to converge as a power of N and D (per regime); a pre-training
            costs its budget of tokens
  effect    each candidate's runs are simulated from the fitted laws with the measured seed noise
            (a new seed of a trained cell: that cell's mean, with noise), added to the real runs,
            and the same analysis and bootstrap run again: the expected 95% widths of α and β
            (mean over a few noise draws)
  choice    the candidates with the largest relative narrowing of α and β per hour, greedily,
            within the budget; then the chosen set simulated together

Candidates: a size ≈ 4× the largest (its pre-training, scratch grid and fine-tunes); a D_F
3× past the largest (with the scratch runs its D_E needs); 2 more seeds of the main budget's
fine-tunes (with their pre-trainings) or of the scratch curves; a pre-training budget 2× the
largest (its fine-tunes simulated from the gap law, where it is fitted).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from transfer_lab.analysis.fit import checks, laws
from transfer_lab.analysis.fit.effective_data import scratch_curves
from transfer_lab.analysis.fit.result import AnalysisResult, FitSettings
from transfer_lab.analysis.studies.plan import _base, larger_shape
from transfer_lab.analysis.studies.sweep_analysis import run_analysis
from transfer_lab.errors import ConfigError, ResultsError
from transfer_lab.study import protocol
from transfer_lab.study.costs import CostModel, non_embedding_params
from transfer_lab.study.keys import compact_number

EXPONENTS = ("alpha", "beta")
DRAWS = 3  # noise draws per candidate: the expected width is their mean
MARGIN = 3.0  # a scratch grid should reach this far past the largest D_E it must interpolate


@dataclass(frozen=True)
class PlannedRun:
    regime: str
    n: float
    d: float | None = None  # D (scratch) or D_F (finetune); None for a pre-training
    seed: int = 0
    budget_tokens: float | None = None  # the pre-training budget (pretrain, finetune)
    shape: tuple[int, int, int] | None = None


@dataclass
class Candidate:
    name: str
    runs: list[PlannedRun]
    commands: list[str]
    hours: float = 0.0
    widths: dict = field(default_factory=dict)  # law -> exponent -> expected width
    score: float = float("nan")  # relative narrowing of the transfer law's α and β widths
    skipped: str = ""  # why it could not be simulated


@dataclass
class PricedPlan:
    sweep: str
    budget_hours: float
    cost: CostModel
    before: dict
    candidates: list[Candidate]
    chosen: list[Candidate]
    expected: dict  # widths with every chosen candidate added
    hours_chosen: float
    workers: int


# --- what each candidate adds -------------------------------------------------------------------------

@dataclass
class _Design:
    """The sweep's design at its main pre-training budget, read off the analysed table."""

    base: str  # python train.py -m experiment=... sweep=...
    budget_tokens: float
    sizes: list[float]
    shapes: dict[float, tuple[int, int, int]]
    finetune: list[float]
    scratch: dict[float, list[float]]
    corpus_chars: float


def _design(res: AnalysisResult) -> _Design:
    t = res.table[~res.table["excluded"]]
    ft = t[(t["regime"] == "finetune") & np.isclose(t["pretrain_budget"], res.main_budget)]
    sc = t[t["regime"] == "scratch"]
    if not len(ft) or not len(sc):
        raise ResultsError(f"sweep {res.sweep} needs fine-tuned and from-scratch runs before a priced plan")
    shapes = {float(r.N): (int(r.n_layer), int(r.n_embd), int(r.n_head)) for r in t.itertuples()
              if all(pd.notna([r.n_layer, r.n_embd, r.n_head]))}
    return _Design(base=_base(res.table, res.sweep), budget_tokens=float(ft["pretrain_budget_tokens"].max()),
                   sizes=sorted(ft["N"].unique()), shapes=shapes, finetune=sorted(_nominal(ft["D_F"])),
                   scratch={float(n): sorted(_nominal(g["D_F"])) for n, g in sc.groupby("N")},
                   corpus_chars=float(t["target_corpus_chars"].max()))


def _nominal(values) -> set[float]:
    """The grid values a sweep was launched with (records hold the subset's real characters: 9,999)."""
    return {float(f"{v:.2g}") for v in values}


def _shape_args(shape) -> str:
    return f"model.n_layer={shape[0]} model.n_embd={shape[1]} model.n_head={shape[2]}" if shape else ""


def _grid(values) -> str:
    return ",".join(compact_number(v) for v in values)


def _law_dt(res: AnalysisResult, n: float, d_f: float) -> float:
    fit = res.fit("transfer")
    if fit is not None:
        return float(laws.transfer_dt(d_f, n, fit.params["k"], fit.params["alpha"], fit.params["beta"]))
    fit = res.fit("unified")
    return float(laws.transfer_dt(d_f, n, fit.params["k"], fit.params["alpha"], fit.params["beta"])) if fit else np.nan


def _scratch_reach(res: AnalysisResult, n: float, d_fs: list[float], have: list[float], corpus: float) -> list[float]:
    """Scratch D to add at N so that the predicted D_E of every D_F is interpolated (MARGIN past it)."""
    d_e = max(d + _law_dt(res, n, d) for d in d_fs)
    top = max(have) if have else 0.0
    wanted = min(MARGIN * d_e, corpus) if np.isfinite(d_e) else top
    grid = protocol.log_grid(max(top * 2.5, min(d_fs)), wanted) if wanted > top * 1.5 else []
    return [d for d in grid if d > top * 1.5 or not have]


def candidates(res: AnalysisResult, design: _Design) -> list[Candidate]:
    out = []
    p = design.budget_tokens
    p_arg = f"pretrain.tokens={compact_number(p)}"
    # a size ≈ 4× the largest, with its own pre-training, scratch grid and fine-tunes
    largest = max(design.sizes)
    shape = larger_shape({"N": largest, **dict(zip(("n_layer", "n_embd", "n_head"), design.shapes.get(largest, (0, 0, 0))))})
    n_new = non_embedding_params(shape[0], shape[1])
    grid = sorted(set(design.scratch.get(largest, [])) | set(_scratch_reach(res, n_new, design.finetune, [], design.corpus_chars)))
    runs = [PlannedRun("pretrain", n_new, budget_tokens=p, shape=shape)]
    runs += [PlannedRun("scratch", n_new, d, shape=shape) for d in grid]
    runs += [PlannedRun("finetune", n_new, d, budget_tokens=p, shape=shape) for d in design.finetune]
    out.append(Candidate(f"a size ≈ 4× the largest: N = {n_new:.3g} ({shape[0]} × {shape[1]}, {shape[2]} heads)", runs,
                         [f"{design.base} {_shape_args(shape)} {p_arg} data.finetune_chars={_grid(design.finetune)} "
                          f"data.scratch_chars={_grid(grid)}"]))
    # fine-tunes 3× past the largest D_F, with the scratch runs their D_E needs
    d_new = 3 * max(design.finetune)
    if d_new <= design.corpus_chars / 10:
        runs, cmds = [PlannedRun("finetune", n, d_new, budget_tokens=p) for n in design.sizes], []
        cmds.append(f"{design.base} regime=finetune {p_arg} data.finetune_chars={compact_number(d_new)}")
        for n in design.sizes:
            more = _scratch_reach(res, n, [d_new], design.scratch.get(n, []), design.corpus_chars)
            runs += [PlannedRun("scratch", n, d) for d in more]
            if more:
                cmds.append(f"{design.base} regime=scratch {_shape_args(design.shapes.get(n))} data.scratch_chars={_grid(more)}")
        out.append(Candidate(f"fine-tunes at D_F = {d_new:.3g} (3× the largest) at every size", runs, cmds))
    out += _seed_candidates(design, p_arg)
    # a pre-training budget 2× the largest
    runs = [PlannedRun("pretrain", n, budget_tokens=2 * p) for n in design.sizes]
    runs += [PlannedRun("finetune", n, d, budget_tokens=2 * p) for n in design.sizes for d in design.finetune]
    out.append(Candidate(f"a pre-training budget 2× the largest ({compact_number(2 * p)} tokens) at every size", runs,
                         [f"{design.base} regime=finetune pretrain.tokens={compact_number(2 * p)} "
                          f"data.finetune_chars={_grid(design.finetune)}"]))
    return out


def _seed_candidates(design: _Design, p_arg: str) -> list[Candidate]:
    """Seeds 1 and 2, one size at a time: of its fine-tunes at the main budget (with their two
    pre-trainings), and of its from-scratch curve, so that the plan can buy the cheap ones alone."""
    out, seeds, p = [], (1, 2), design.budget_tokens
    for n in design.sizes:
        shape = _shape_args(design.shapes.get(n))
        runs = [PlannedRun("pretrain", n, seed=s, budget_tokens=p) for s in seeds]
        runs += [PlannedRun("finetune", n, d, seed=s, budget_tokens=p) for d in design.finetune for s in seeds]
        out.append(Candidate(f"seeds 1 and 2 of the fine-tunes at N = {n:.3g} (with their 2 pre-trainings)", runs,
                             [f"{design.base} regime=finetune {shape} {p_arg} seed=1,2 "
                              f"data.finetune_chars={_grid(design.finetune)}"]))
        ds = design.scratch.get(n, [])
        out.append(Candidate(f"seeds 1 and 2 of the from-scratch curve at N = {n:.3g}",
                             [PlannedRun("scratch", n, d, seed=s) for d in ds for s in seeds],
                             [f"{design.base} regime=scratch {shape} seed=1,2 data.scratch_chars={_grid(ds)}"]))
    return out


def _exists(table: pd.DataFrame, run: PlannedRun) -> bool:
    t = table[(table["regime"] == run.regime) & (table["status"] == "done") & np.isclose(table["N"], run.n, rtol=0.02)
              & (table["seed"].fillna(0).astype(int) == run.seed)]
    if run.d is not None:
        t = t[np.isclose(t["D_F"], run.d, rtol=0.03)]
    if run.budget_tokens is not None:
        t = t[np.isclose(t["pretrain_budget_tokens"], run.budget_tokens, rtol=0.01)]
    return bool(len(t))


def _new_only(table: pd.DataFrame, cands: list[Candidate]) -> list[Candidate]:
    out = []
    for c in cands:
        c.runs = [r for r in c.runs if not _exists(table, r)]
        if any(r.regime != "pretrain" for r in c.runs):
            out.append(c)
    return out


# --- simulating a candidate's runs -----------------------------------------------------------------

class _Truth:
    """What a run not trained yet would measure, read off the fitted laws and the measured cells."""

    def __init__(self, res: AnalysisResult):
        self.res, self.curves = res, scratch_curves(res.table)
        t = res.table[~res.table["excluded"]]
        self.cells = t[t["regime"].isin(("scratch", "finetune"))].assign(
            nominal=lambda x: x["D_F"].map(lambda v: float(f"{v:.2g}")))
        self.noise = res.noise if res.noise is not None else checks.NoiseModel()
        kap = res.fit("kaplan")
        self.kaplan = None if kap is None else (10 ** kap.theta[0], 10 ** kap.theta[1], kap.theta[2], kap.theta[3])
        self.gaps = {f.group: f for f in res.group_fits.get("gap", []) if f.ok}

    def sigma(self, regime: str, n: float) -> float:
        measured = self.noise.sigma(regime, n)
        fallback = self.res.residual_noise if regime == "scratch" and self.res.residual_noise else 0.01
        return float(measured if measured is not None else fallback)

    def scratch_loss(self, n: float, d: float) -> float:
        curve = self.curves.get(float(n))
        if curve is not None and curve.usable and np.exp(curve.log_d[0]) <= d <= curve.d_max:
            return float(curve.loss_at(d))
        return float(laws.kaplan_loss(n, d, *self.kaplan)) if self.kaplan else np.nan

    def cell_mean(self, run: PlannedRun, budget_chars: float | None) -> float | None:
        c = self.cells[(self.cells["regime"] == run.regime) & np.isclose(self.cells["N"], run.n, rtol=0.02)
                       & np.isclose(self.cells["nominal"], run.d, rtol=0.03)]
        if run.regime == "finetune":
            c = c[np.isclose(c["pretrain_budget"], budget_chars, rtol=0.01)]
        return float(np.exp(np.log(c["loss"]).mean())) if len(c) else None

    def loss(self, run: PlannedRun, budget_chars: float, main_tokens: float) -> float:
        known = self.cell_mean(run, budget_chars)
        if known is not None:  # another seed of a measured cell: that cell, with noise
            return known
        if run.regime == "scratch":
            return self.scratch_loss(run.n, run.d)
        if np.isclose(run.budget_tokens, main_tokens):
            return self.scratch_loss(run.n, run.d + _law_dt(self.res, run.n, run.d))
        gap = self.gaps.get(f"N={run.n:.3g}")  # another budget: the transfer-gap law at this size
        if gap is None:
            return np.nan
        return float(np.exp(gap.evaluate({"P_m": np.array([budget_chars / 1e6]), "D_m": np.array([run.d / 1e6])})[0]))


def _rows(coll_table: pd.DataFrame, res: AnalysisResult, runs: list[PlannedRun], truth: _Truth,
          rng: np.random.Generator, tag: str) -> pd.DataFrame:
    t = coll_table[(coll_table["status"] == "done") & coll_table["regime"].isin(("scratch", "finetune"))]
    chars_per_token_budget = res.main_budget / float(t["pretrain_budget_tokens"].max())
    main_tokens = float(t.loc[np.isclose(t["pretrain_budget"], res.main_budget), "pretrain_budget_tokens"].max())
    rows = []
    for i, run in enumerate(r for r in runs if r.regime != "pretrain"):
        template = t[t["regime"] == run.regime].iloc[-1].to_dict()
        budget_chars = None if run.budget_tokens is None else run.budget_tokens * chars_per_token_budget
        loss = truth.loss(run, budget_chars, main_tokens)
        if not np.isfinite(loss):
            why = (f"the transfer-gap law is not fitted at N = {run.n:.3g} (it needs fine-tunes at ≥ 3 pre-training "
                   f"budgets there)" if run.regime == "finetune" and budget_chars is not None
                   else f"no fitted law reaches N = {run.n:.3g}, D = {run.d:.3g}")
            raise ResultsError(f"no law predicts its {run.regime} run at N = {run.n:.3g}, D = {run.d:.3g}: {why}")
        loss *= float(np.exp(rng.normal(0.0, truth.sigma(run.regime, run.n))))
        per_token = template["loss_per_token"] / template["loss_per_char"]
        shape = run.shape or (template["n_layer"], template["n_embd"], template["n_head"])
        rows.append({**template, "run_key": f"sim-{tag}-{i}", "N": run.n, "D_F": run.d,
                     "D_F_tokens": run.d / (template["D_F"] / template["D_F_tokens"]), "seed": run.seed,
                     "loss": loss, "loss_per_char": loss, "loss_per_token": loss * per_token,
                     "pretrain_budget": budget_chars, "pretrain_budget_tokens": run.budget_tokens,
                     "n_layer": shape[0], "n_embd": shape[1], "n_head": shape[2], "excluded": False, "reason": "",
                     "converged": True, "stop_reason": "early_stop"})
    return pd.DataFrame(rows, columns=coll_table.columns)


def widths(table: pd.DataFrame, settings: FitSettings) -> dict:
    """95% interval widths of k (decades), α and β: the transfer and the unified law."""
    res = run_analysis(table, settings, scope="transfer")
    out = {}
    for law in ("transfer", "unified"):
        f = res.fit(law)
        if f is not None and f.ci:
            out[law] = {name: float(f.ci[name][1] - f.ci[name][0]) for name in EXPONENTS if name in f.ci}
    return out


def _expected(coll_table, res, runs, truth, settings, tag) -> dict:
    draws = []
    for draw in range(DRAWS):
        rng = np.random.default_rng(settings.seed + 1000 * draw + 7)
        sim = pd.concat([coll_table, _rows(coll_table, res, runs, truth, rng, f"{tag}-{draw}")], ignore_index=True)
        draws.append(widths(sim, dataclasses.replace(settings, seed=settings.seed + draw)))
    out = {}
    for law in {k for d in draws for k in d}:
        out[law] = {name: float(np.mean([d[law][name] for d in draws if law in d and name in d[law]]))
                    for name in EXPONENTS if any(law in d and name in d[law] for d in draws)}
    return out


def _score(before: dict, after: dict) -> float:
    b, a = before.get("transfer", {}), after.get("transfer", {})
    terms = [(b[x] - a[x]) / b[x] for x in EXPONENTS if x in b and x in a and b[x] > 0]
    return float(sum(terms)) if terms else float("nan")


def choose(cands: list[Candidate], budget_hours: float) -> list[Candidate]:
    """Greedy by narrowing per hour: the best buys that fit in what is left of the budget."""
    ranked = sorted((c for c in cands if np.isfinite(c.score) and c.score > 0), key=lambda c: -c.score / max(c.hours, 1e-9))
    chosen, spent = [], 0.0
    for c in ranked:
        if spent + c.hours <= budget_hours:
            chosen.append(c)
            spent += c.hours
    return chosen


def priced_plan(res: AnalysisResult, coll_table: pd.DataFrame, budget_hours: float, settings: FitSettings,
                workers: int = 2) -> PricedPlan:
    if not (budget_hours and budget_hours > 0):
        raise ConfigError(f"plan.budget_hours={budget_hours} must be > 0 (hours of this machine), e.g. plan.budget_hours=6")
    cost = CostModel.fit(res.table)
    design = _design(res)
    truth = _Truth(res)
    before = widths(coll_table, settings)
    cands = _new_only(coll_table, candidates(res, design))
    for c in cands:
        c.hours = sum(cost.seconds(r.regime, r.n, r.d, r.budget_tokens) for r in c.runs) / 3600
        try:
            c.widths = _expected(coll_table, res, c.runs, truth, settings, tag=str(len(c.name)))
            c.score = _score(before, c.widths)
        except ResultsError as err:
            c.skipped = str(err)
    chosen = choose(cands, budget_hours)
    spent = sum(c.hours for c in chosen)
    expected = (_expected(coll_table, res, [r for c in chosen for r in c.runs], truth, settings, "chosen")
                if len(chosen) > 1 else (chosen[0].widths if chosen else before))
    return PricedPlan(res.sweep, budget_hours, cost, before, cands, chosen, expected, spent, workers)
