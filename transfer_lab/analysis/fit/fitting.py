"""Fitting machinery: log-space least squares, grid of starts, Huber, bootstrap, AIC/BIC, hold-out.

One fit = one LawSpec (parameters with bounds and a start grid, a vectorised model that maps
parameter columns and data to the predicted target in log space) applied to a data dict.

* The grid of starts runs once, on the full data, through a batched Levenberg–Marquardt
  (`batched_lm`: all starts at once, numpy only); the best start is polished by lmfit
  (`least_squares`, bounds, optional Huber loss) which gives the reported fit, its standard
  errors, AIC/BIC and convergence message.
* Bootstrap: resample whole runs (rows) with replacement, `n_bootstrap` times, seeded; all
  resamples are refitted together by `batched_lm` from the best parameters (the same
  objective lmfit minimises, multinomial weights), then percentile intervals.
* Hold-out: refit without the rows at the largest value of the spec's hold-out column and
  predict them (RMSE in log space, mean |relative error|).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Callable

import lmfit
import numpy as np

from transfer_lab.analysis.fit.intervals import interval

Model = Callable[[list[np.ndarray], dict[str, np.ndarray]], np.ndarray]


@dataclass
class Param:
    name: str  # name of the fitted (internal) parameter, e.g. "log10_k"
    lo: float
    hi: float
    grid: tuple[float, ...]
    log10: bool = False  # the reported value is 10**theta
    report: str | None = None  # reported name (e.g. "k"); defaults to `name`

    @property
    def label(self) -> str:
        return self.report or self.name

    def to_report(self, theta):
        return np.power(10.0, theta) if self.log10 else theta


@dataclass
class LawSpec:
    name: str
    title: str
    params: list[Param]
    model: Model  # (parameter columns, data) -> predicted target, shape (B, n)
    target: str  # data key of the observed target (already in log space)
    holdout: str | None = None  # data key whose largest value is held out and predicted
    needs_distinct: dict[str, int] = field(default_factory=dict)  # e.g. {"N": 2}
    inputs: tuple[str, ...] = ()  # data keys the model reads (rows with a non-finite one are left out)
    max_starts: int = 64


@dataclass
class FitResult:
    law: str
    title: str
    group: str = ""
    status: str = "not fitted"  # ok | not fitted | failed
    message: str = ""
    n_points: int = 0
    n_params: int = 0
    params: dict[str, float] = field(default_factory=dict)  # reported values
    stderr: dict[str, float] = field(default_factory=dict)  # on the fitted (internal) scale
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    theta: np.ndarray | None = None
    boot_theta: np.ndarray | None = None  # (B, p) bootstrap refits (internal scale)
    converged: bool = False
    convergence: str = ""
    at_bounds: list[str] = field(default_factory=list)
    aic: float = float("nan")
    bic: float = float("nan")
    rms_log: float = float("nan")
    observed: np.ndarray | None = None  # target, log space
    predicted: np.ndarray | None = None
    run_keys: list[str] = field(default_factory=list)
    holdout: dict = field(default_factory=dict)
    spec: LawSpec | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def evaluate(self, data: dict[str, np.ndarray], boot: bool = False) -> np.ndarray:
        """The model's prediction (log space) at `data`: (n,) for the best fit, (B, n) with boot."""
        theta = self.boot_theta if boot else self.theta[None, :]
        out = _evaluate(self.spec.model, theta, data)
        return out if boot else out[0]


def _evaluate(model: Model, theta: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(model([theta[:, j:j + 1] for j in range(theta.shape[1])], data), float)


def _rho(r, delta):
    if delta is None:
        return 0.5 * r * r
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * a - 0.5 * delta * delta)


def _cost(r, w, delta):
    c = np.sum(w * _rho(r, delta), axis=1)
    c[~np.isfinite(c)] = np.inf
    return c


def batched_lm(model: Model, theta0: np.ndarray, data: dict, y: np.ndarray, w: np.ndarray,
               lo: np.ndarray, hi: np.ndarray, huber: float | None = None,
               max_iter: int = 200, ftol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Minimise Σ w·ρ(model − y) for B problems at once (Levenberg–Marquardt, box bounds by
    projection, Huber by reweighting). theta0 (B, p); w and y (B, n) or (n,): a bootstrap of
    whole runs of both regimes gives each replicate its own targets. Returns (theta, cost)."""
    theta = np.clip(np.array(theta0, float), lo, hi)
    B, p = theta.shape
    n = y.shape[-1]
    w = np.broadcast_to(w, (B, n)).astype(float)
    y = np.broadcast_to(y, (B, n))
    pred = _evaluate(model, theta, data)
    cost = _cost(pred - y, w, huber)
    lam = np.full(B, 1e-3)
    active = np.flatnonzero(np.isfinite(cost))
    eye = np.eye(p)
    for _ in range(max_iter):
        if active.size == 0:
            break
        th, pr, wa, ya = theta[active], pred[active], w[active], y[active]
        r = pr - ya
        h = 1e-7 * np.maximum(1.0, np.abs(th))
        J = np.empty((active.size, n, p))
        for j in range(p):
            tj = th.copy()
            tj[:, j] += h[:, j]
            J[:, :, j] = (_evaluate(model, tj, data) - pr) / h[:, j:j + 1]
        J = np.nan_to_num(J, nan=0.0, posinf=0.0, neginf=0.0)
        wr = wa if huber is None else wa * np.minimum(1.0, huber / np.maximum(np.abs(r), 1e-300))
        A = np.einsum("bnp,bn,bnq->bpq", J, wr, J)
        g = np.einsum("bnp,bn,bn->bp", J, wr, r)
        d = np.diagonal(A, axis1=1, axis2=2)
        damp = lam[active, None] * (d + 1e-12 * (1.0 + d.max(axis=1, keepdims=True)))
        M = A + damp[:, :, None] * eye
        try:
            step = -np.linalg.solve(M, g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -(np.linalg.pinv(M) @ g[..., None])[..., 0]
        cand = np.clip(th + step, lo, hi)
        pc = _evaluate(model, cand, data)
        cc = _cost(pc - ya, wa, huber)
        old = cost[active]
        better = cc < old
        acc = active[better]
        theta[acc], pred[acc], cost[acc] = cand[better], pc[better], cc[better]
        lam[active] = np.where(better, lam[active] / 3.0, lam[active] * 4.0)
        rel = np.where(better, (old - cc) / np.maximum(old, 1e-300), np.inf)
        done = (better & (rel < ftol)) | (lam[active] > 1e12)
        lam[active] = np.clip(lam[active], 1e-12, None)
        active = active[~done]
    return theta, cost


def _starts(spec: LawSpec, rng: np.random.Generator) -> np.ndarray:
    grid = np.array(list(itertools.product(*[p.grid for p in spec.params])), float)
    if len(grid) > spec.max_starts:
        grid = grid[rng.choice(len(grid), spec.max_starts, replace=False)]
    return grid


def _lmfit(spec, data, y, theta0, huber, w=None):
    params = lmfit.Parameters()
    for p, v in zip(spec.params, theta0):
        params.add(p.name, value=float(np.clip(v, p.lo, p.hi)), min=p.lo, max=p.hi)
    sw = np.ones_like(y) if w is None else np.sqrt(w)
    names = [p.name for p in spec.params]

    def residual(pars):
        th = np.array([[pars[n].value for n in names]])
        return np.nan_to_num((_evaluate(spec.model, th, data)[0] - y) * sw, nan=1e6, posinf=1e6, neginf=-1e6)

    kws = {"loss": "huber", "f_scale": huber} if huber else {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # lmfit's correlation of a degenerate covariance
        return lmfit.minimize(residual, params, method="least_squares", **kws)


def _subset(data: dict, mask: np.ndarray) -> dict:
    return {k: (v[mask] if isinstance(v, np.ndarray) and v.shape[:1] == mask.shape else v)
            for k, v in data.items()}


def fit_law(spec: LawSpec, data: dict[str, np.ndarray], *, group: str = "", n_bootstrap: int = 1000,
            seed: int = 0, ci: float = 0.95, huber: float | None = None,
            run_keys: list[str] | None = None, bootstrap_targets=None) -> FitResult:
    """Fit `spec` to `data` (dict of equal-length arrays holding spec.target); never raises for
    bad data: a FitResult with status 'not fitted' and a message instead.

    bootstrap_targets: (Y, W), each (B, n rows of `data`), replaces the resampling of rows: the
    targets and weights of B replicates that resampled more than these rows (e.g. the from-scratch
    runs a D_T was inverted through); W = 0 leaves a row out of a replicate."""
    res = FitResult(law=spec.name, title=spec.title, group=group, spec=spec, n_params=len(spec.params))
    finite = _usable_rows(spec, data)
    y, data = np.asarray(data[spec.target], float)[finite], _subset(data, finite)
    res.run_keys = list(np.asarray(run_keys)[finite]) if run_keys is not None else []
    res.n_points = y.size
    res.message = _too_few(spec, data, y.size)
    if res.message:
        return res
    rng = np.random.default_rng(seed)  # the starts draw from it first, then the bootstrap
    bounds = (np.array([q.lo for q in spec.params]), np.array([q.hi for q in spec.params]))
    start = _best_start(spec, data, y, rng, bounds, huber)
    if start is None:
        res.status, res.message = "failed", "no start of the grid gave a finite objective"
        return res
    _record_fit(res, spec, data, y, _lmfit(spec, data, y, start, huber), bounds)
    if bootstrap_targets is not None:
        targets = [np.asarray(a, float)[:, finite] for a in bootstrap_targets]
        res.boot_theta = _bootstrap_targets(spec, data, res.theta, *targets, bounds, huber)
    elif n_bootstrap > 0:
        res.boot_theta = _bootstrap_rows(spec, data, y, res.theta, n_bootstrap, rng, bounds, huber)
    if res.boot_theta is not None and len(res.boot_theta):
        res.ci = {par.label: interval(par.to_report(res.boot_theta[:, j]), ci) for j, par in enumerate(spec.params)}
    if spec.holdout:
        res.holdout = _holdout(spec, data, y, res.theta, huber, *bounds)
    return res


def _usable_rows(spec: LawSpec, data: dict[str, np.ndarray]) -> np.ndarray:
    """Rows whose target and model inputs are all finite."""
    finite = np.isfinite(np.asarray(data[spec.target], float))
    for key in spec.inputs:
        finite &= np.isfinite(np.asarray(data[key], float))
    return finite


def _too_few(spec: LawSpec, data: dict[str, np.ndarray], n: int) -> str:
    """Why these rows cannot be fitted ('' where they can): fewer points than parameters + 1, or
    fewer distinct values of a key than the law needs."""
    p = len(spec.params)
    if n < p + 1:
        return f"{n} usable points for {p} parameters; needs at least {p + 1}"
    for key, k in spec.needs_distinct.items():
        distinct = np.unique(data[key]).size
        if distinct < k:
            return f"only {distinct} distinct {key} value(s); this law needs at least {k}"
    return ""


def _best_start(spec: LawSpec, data: dict, y: np.ndarray, rng: np.random.Generator, bounds, huber) -> np.ndarray | None:
    """The grid's best start after the batched LM; None where no start gave a finite objective."""
    theta, cost = batched_lm(spec.model, _starts(spec, rng), data, y, np.ones(y.size), *bounds, huber)
    return theta[np.argmin(cost)] if np.isfinite(cost).any() else None


def _record_fit(res: FitResult, spec: LawSpec, data: dict, y: np.ndarray, out, bounds) -> None:
    """lmfit's polished fit into `res`: values, errors, convergence, the parameters at a bound, AIC/BIC."""
    names = [q.name for q in spec.params]
    res.theta = np.array([out.params[nm].value for nm in names])
    res.stderr = {nm: (out.params[nm].stderr if out.params[nm].stderr is not None else float("nan"))
                  for nm in names}
    res.params = {q.label: float(q.to_report(t)) for q, t in zip(spec.params, res.theta)}
    res.converged = bool(out.success)
    res.convergence = str(out.message)
    span = bounds[1] - bounds[0]
    res.at_bounds = [q.label for q, t in zip(spec.params, res.theta)
                     if min(t - q.lo, q.hi - t) < 1e-6 * span[names.index(q.name)]]
    res.aic, res.bic = float(out.aic), float(out.bic)
    res.observed, res.predicted = y, res.evaluate(data)
    res.rms_log = float(np.sqrt(np.mean((res.predicted - y) ** 2)))
    res.status = "ok"


def _bootstrap_targets(spec: LawSpec, data: dict, theta: np.ndarray, y_boot: np.ndarray, w_boot: np.ndarray,
                       bounds, huber) -> np.ndarray:
    """Refits to given replicate targets (a non-finite target leaves its row out of that replicate)."""
    w_boot = np.where(np.isfinite(y_boot), w_boot, 0.0)
    y_boot = np.where(np.isfinite(y_boot), y_boot, 0.0)
    bt, bc = batched_lm(spec.model, np.tile(theta, (len(y_boot), 1)), data, y_boot, w_boot, *bounds, huber)
    bc[w_boot.sum(axis=1) < len(spec.params) + 1] = np.inf  # a replicate with too few usable rows has no fit
    return bt[np.isfinite(bc)]


def _bootstrap_rows(spec: LawSpec, data: dict, y: np.ndarray, theta: np.ndarray, n_bootstrap: int,
                    rng: np.random.Generator, bounds, huber) -> np.ndarray:
    """Refits to whole rows resampled with replacement (multinomial weights on the same rows)."""
    n = y.size
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    w = np.zeros((n_bootstrap, n))
    np.add.at(w, (np.repeat(np.arange(n_bootstrap), n), idx.ravel()), 1.0)
    bt, bc = batched_lm(spec.model, np.tile(theta, (n_bootstrap, 1)), data, y, w, *bounds, huber)
    return bt[np.isfinite(bc)]


def _holdout(spec, data, y, theta0, huber, lo, hi) -> dict:
    col = np.asarray(data[spec.holdout], float)
    top = col.max()
    mask = col < top
    info = {"column": spec.holdout, "value": float(top), "n_held": int((~mask).sum())}
    if mask.sum() < len(spec.params) + 1:
        info["message"] = f"too few points left after holding out {spec.holdout} = {top:.3g}"
        return info
    for key, k in spec.needs_distinct.items():
        if np.unique(data[key][mask]).size < k:
            info["message"] = f"holding out {spec.holdout} = {top:.3g} leaves too few distinct {key}"
            return info
    sub = _subset(data, mask)
    th, cost = batched_lm(spec.model, theta0[None, :], sub, y[mask], np.ones(int(mask.sum())), lo, hi, huber)
    pred = _evaluate(spec.model, th, _subset(data, ~mask))[0]
    err = pred - y[~mask]
    info["rmse_log"] = float(np.sqrt(np.mean(err ** 2)))
    info["mean_abs_rel_err"] = float(np.mean(np.abs(np.expm1(err))))
    return info
