"""Pre-registered predictions: what the fitted laws expect for cells that are not trained yet,
written down (and committed) before they train, then checked cell by cell once they exist.

A predictions file holds, per law and cell, the point prediction and a 95% *prediction* interval
for one new run: the laws' bootstrap draws, each with one run's measured seed noise added, since a
single new run scatters around the law by that much:
  loss        ln L_draw + ε,  ε ~ N(0, σ_regime(N))
  D_T         D_E_draw·e^ε − D_F,  ε ~ N(0, √(σ_finetune² + σ_scratch²) / |d ln L/d ln D|):
              the loss noise of the fine-tune and of the from-scratch curve, read through the
              from-scratch curve's slope at D_E (a flat curve turns 1% of loss into a lot of data)
It is stamped with a content hash of the records it was fitted on (run keys, losses, steps), so
`verify` can tell when those runs changed after the predictions were written.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from transfer_lab.analysis.fit import laws
from transfer_lab.analysis.fit.intervals import interval
from transfer_lab.errors import ConfigError, ResultsError

FORMAT = "transfer_lab.predictions/1"
HASHED = ("run_key", "regime", "status", "loss_per_char", "loss_per_token", "steps", "converged", "seed")
N_TOLERANCE = 0.02  # a measured run is the predicted cell's if its N is within 2% (N is given as a number)
D_TOLERANCE = 0.03  # D_F and D are recorded as the subset's real characters: 9,999 for 1e4


def runs_hash(table: pd.DataFrame, run_keys: list[str]) -> str:
    """sha256 of the records of `run_keys` (the fields a fit reads), independent of row order."""
    rows = table[table["run_key"].isin(run_keys)][list(HASHED)].sort_values("run_key")
    text = "\n".join("|".join(_canonical(v) for v in row) for row in rows.itertuples(index=False))
    missing = sorted(set(run_keys) - set(rows["run_key"]))
    return hashlib.sha256((text + "\nmissing:" + ",".join(missing)).encode()).hexdigest()


def _canonical(value) -> str:
    """One spelling per value, whatever dtype a column took (a running run's empty row turns ints
    into floats, booleans into objects)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value))
    return str(value)


def fitted_runs(table: pd.DataFrame) -> list[str]:
    """The finished target runs an analysis of this table fits (and their pre-trainings)."""
    done = table[table["status"] == "done"]
    return sorted(done["run_key"].astype(str))


def git_commit(cwd: Path | None = None) -> str:
    """HEAD of the checkout this code runs from, '+dirty' when it has uncommitted changes."""
    where = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@dataclass(frozen=True)
class Noise:
    finetune: float  # σ of one run's ln loss (0 where not measured)
    scratch: float
    source: str


def _noise(res, n: float) -> Noise:
    model = res.noise
    if model is None:
        return Noise(0.0, 0.0, "not measured: intervals hold the laws' uncertainty only")
    ft, sc = model.sigma("finetune", n), model.sigma("scratch", n)
    source = f"finetune: {model.source('finetune', n)}; scratch: {model.source('scratch', n)}"
    return Noise(ft or 0.0, sc or 0.0, source)


def _kaplan_slope(n, d, n_c, d_c, alpha_n, alpha_d):
    """d ln L / d ln D of Kaplan's law at (N, D): how much ln loss one e-fold of data removes."""
    data_term = d_c / d
    return -alpha_d * data_term / (np.power(n_c / n, alpha_n / alpha_d) + data_term)


def _draws(fit, columns: slice) -> np.ndarray:
    theta = fit.boot_theta if fit.boot_theta is not None and len(fit.boot_theta) else fit.theta[None, :]
    return theta[:, columns]


def _kaplan(theta: np.ndarray) -> tuple:
    return 10 ** theta[:, 0], 10 ** theta[:, 1], theta[:, 2], theta[:, 3]


def _law_parts(res, law: str):
    """(transfer parameters (k, α, β) as columns, Kaplan parameters as columns) of `law`: its best
    fit and its bootstrap draws; None where the law was not fitted."""
    fit = res.fit(law)
    loss_fit = fit if law == "unified" else res.fit("kaplan")
    if fit is None or loss_fit is None:
        return None
    dt_cols = slice(0, 3) if law == "transfer" else slice(4, 7)
    best = (fit.theta[None, dt_cols], loss_fit.theta[None, 0:4])
    boot_dt, boot_loss = _draws(fit, dt_cols), _draws(loss_fit, slice(0, 4))
    m = min(len(boot_dt), len(boot_loss))  # two independent bootstraps: paired draw by draw
    return best, (boot_dt[:m], boot_loss[:m])


def excess_misfit(res, law: str) -> float:
    """The law's misfit beyond the measured noise (RMS, log space of its own target): 0 where it fits
    within the noise or the noise is not measured. A prediction 'with misfit' adds it."""
    g = res.goodness.get((law, ""))
    if g is None or g.verdict == "untested":
        return 0.0
    return float(np.sqrt(max(g.rms_log ** 2 - g.noise_rms ** 2, 0.0)))


def _finetune_draws(theta, n, d_f, noise: Noise, rng, disc_dt: float, disc_loss: float):
    """D_T one new run would measure and its loss: the law's draws, its misfit (disc_*), one run's noise."""
    dt_theta, loss_theta = theta
    d_t = laws.transfer_dt(d_f, n, 10 ** dt_theta[:, 0], dt_theta[:, 1], dt_theta[:, 2])
    d_t = d_t * np.exp(rng.standard_normal(len(d_t)) * disc_dt)
    kap = _kaplan(loss_theta)
    d_e = d_f + d_t
    loss = laws.kaplan_loss(n, d_e, *kap) * np.exp(rng.standard_normal(len(d_t)) * np.hypot(noise.finetune, disc_loss))
    slope = np.abs(_kaplan_slope(n, d_e, *kap))
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_ln_de = np.sqrt(noise.finetune ** 2 + noise.scratch ** 2 + disc_loss ** 2) / slope
    d_t = d_e * np.exp(rng.standard_normal(len(d_e)) * np.nan_to_num(sigma_ln_de, nan=0.0)) - d_f
    return d_t, loss


def _finetune_cell(parts, n: float, d_f: float, noise: Noise, rng, ci: float, disc: tuple[float, float]) -> dict:
    dt_theta, loss_theta = parts[0]
    d_t = float(laws.transfer_dt(d_f, n, 10 ** dt_theta[0, 0], dt_theta[0, 1], dt_theta[0, 2]))
    loss = float(laws.kaplan_loss(n, d_f + d_t, *_kaplan(loss_theta))[0])
    out = {"D_T": d_t, "multiplier": (d_f + d_t) / d_f, "loss": loss}
    for suffix, (disc_dt, disc_loss) in (("", (0.0, 0.0)), ("_with_misfit", disc)):
        d_tb, loss_b = _finetune_draws(parts[1], n, d_f, noise, rng, disc_dt, disc_loss)
        out |= {f"D_T_ci{suffix}": interval(d_tb, ci), f"multiplier_ci{suffix}": interval((d_f + d_tb) / d_f, ci),
                f"loss_ci{suffix}": interval(loss_b, ci)}
    return out


def _scratch_cell(res, n: float, d: float, noise: Noise, rng, ci: float) -> dict | None:
    fit = res.fit("kaplan")
    if fit is None:
        return None
    best = laws.kaplan_loss(n, d, *_kaplan(fit.theta[None, :]))
    draws = laws.kaplan_loss(n, d, *_kaplan(_draws(fit, slice(0, 4))))
    out = {"loss": float(best[0])}
    for suffix, disc in (("", 0.0), ("_with_misfit", excess_misfit(res, "kaplan"))):
        out[f"loss_ci{suffix}"] = interval(draws * np.exp(rng.standard_normal(len(draws)) * np.hypot(noise.scratch, disc)), ci)
    return out


def predict_cells(res, sizes: list[float], finetune_chars: list[float], scratch_chars: list[float],
                  law_names=("transfer", "unified")) -> list[dict]:
    """One row per (law, cell): fine-tunes at every (N, D_F) for each fitted law, from-scratch runs at
    every (N, D) from the Kaplan law."""
    ci, rng = res.settings.get("ci", 0.95), np.random.default_rng(res.settings.get("seed", 0))
    cells = []
    for law in law_names:
        parts = _law_parts(res, law)
        if parts is None:
            continue
        # transfer: its misfit in ln D_T, and Kaplan's in the loss it reads D_T through; unified: one law of ln L
        disc = ((excess_misfit(res, "transfer"), excess_misfit(res, "kaplan")) if law == "transfer"
                else (0.0, excess_misfit(res, "unified")))
        for n in sizes:
            for d_f in finetune_chars:
                noise = _noise(res, n)
                cell = _finetune_cell(parts, n, d_f, noise, rng, ci, disc)
                cells.append({"law": law, "regime": "finetune", "N": float(n), "D": float(d_f),
                              "pretrain_budget": res.main_budget, **cell, "noise": noise.source})
    for n in sizes:
        for d in scratch_chars:
            cell = _scratch_cell(res, n, d, _noise(res, n), rng, ci)
            if cell is not None:
                cells.append({"law": "kaplan", "regime": "scratch", "N": float(n), "D": float(d),
                              "pretrain_budget": None, **cell, "noise": _noise(res, n).source})
    if not cells:
        raise ResultsError(f"no law was fitted for sweep {res.sweep} (needs from-scratch and fine-tuned runs at "
                           "≥ 2 sizes and 2 data sizes); nothing can be predicted yet")
    return cells


def predictions_document(res, cells: list[dict], command: str) -> dict:
    keys = fitted_runs(res.table)
    fits = {name: {"params": f.params, "ci": {k: list(v) for k, v in f.ci.items()}}
            for name, f in res.fits.items() if f.ok and name in ("transfer", "unified", "kaplan")}
    return {"format": FORMAT, "sweep": res.sweep, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(), "command": command, "ci": res.settings.get("ci", 0.95),
            "settings": {k: v for k, v in res.settings.items() if k != "command"},
            "fitted_on": {"runs": keys, "sha256": runs_hash(res.table, keys)}, "fits": fits, "cells": cells}


def load(path: Path, kind: str = FORMAT) -> dict:
    """A predictions (or plan) file, or a one-line error naming what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"predictions file {path} does not exist (or is not a file); write one first with "
                          "analyze.py action=predict predict.n=... predict.finetune_chars=... predict.save=FILE")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsError(f"predictions file {path} cannot be read ({type(err).__name__}); restore it from git "
                           "(git checkout -- FILE): a pre-registration cannot be rewritten after its runs exist") from None
    what = "predictions" if kind == FORMAT else "plan"
    if not isinstance(doc, dict) or doc.get("format") != kind or (kind == FORMAT and not isinstance(doc.get("cells"), list)):
        raise ResultsError(f"{path} is not a transfer_lab {what} file (format {kind}); point verify.{what} at a "
                           f"file written by {'action=predict predict.save' if kind == FORMAT else 'action=plan plan.save'}=...")
    return doc


def check_hash(doc: dict, table: pd.DataFrame, path: Path) -> None:
    """The runs the predictions were fitted on must be the runs there now, unchanged."""
    keys = doc["fitted_on"]["runs"]
    if runs_hash(table, keys) == doc["fitted_on"]["sha256"]:
        return
    missing = sorted(set(keys) - set(table["run_key"]))
    raise ResultsError(f"{path} was fitted on {len(keys)} runs of sweep {doc['sweep']} that have changed since "
                       f"({len(missing)} missing{': ' + missing[0] if missing else ''}; others retrained or edited): "
                       "its predictions no longer test these runs; pre-register again from the current runs")


def _match(table: pd.DataFrame, cell: dict) -> pd.DataFrame:
    t = table[(table["regime"] == cell["regime"]) & ~table["excluded"].astype(bool)]
    t = t[np.isclose(t["N"], cell["N"], rtol=N_TOLERANCE) & np.isclose(t["D_F"], cell["D"], rtol=D_TOLERANCE)]
    if cell["regime"] == "finetune" and cell.get("pretrain_budget") is not None:
        t = t[np.isclose(t["pretrain_budget"], cell["pretrain_budget"], rtol=0.01)]
    return t


def compare(doc: dict, table: pd.DataFrame) -> pd.DataFrame:
    """Measured against predicted, one row per (law, cell, quantity) with a measurement."""
    rows = []
    for cell in doc["cells"]:
        runs = _match(table, cell)
        if not len(runs):
            continue
        quantities = [("loss", float(runs["loss"].mean()))]
        if cell["regime"] == "finetune":
            interp = runs[runs["D_E_method"] == "interpolated"] if "D_E_method" in runs else runs.iloc[:0]
            quantities.append(("D_T", float(interp["D_T"].mean()) if len(interp) else float("nan")))
        for quantity, measured in quantities:
            lo, hi = cell[quantity + "_ci"]
            wide = cell.get(quantity + "_ci_with_misfit", (lo, hi))
            rows.append({"law": cell["law"], "regime": cell["regime"], "N": cell["N"], "D": cell["D"],
                         "quantity": quantity, "predicted": cell[quantity], "lo": lo, "hi": hi,
                         "measured": measured, "seeds": len(runs),
                         "inside": bool(lo <= measured <= hi) if np.isfinite(measured) else None,
                         "miss": _miss(measured, lo, hi), "lo_with_misfit": wide[0], "hi_with_misfit": wide[1],
                         "inside_with_misfit": bool(wide[0] <= measured <= wide[1]) if np.isfinite(measured) else None})
    return pd.DataFrame(rows)


def _miss(measured: float, lo: float, hi: float) -> float:
    """How far outside its interval a measurement lies, relative to the nearer edge (0 inside)."""
    if not np.isfinite(measured) or lo <= measured <= hi:
        return 0.0
    edge = lo if measured < lo else hi
    return float(measured / edge - 1) if edge else float("nan")


def calibration(rows: pd.DataFrame, nominal: float) -> pd.DataFrame:
    """Share of measured cells inside their interval, per law and quantity, with a 95% binomial
    (Clopper-Pearson) interval for that share, against the nominal coverage."""
    out = []
    scored = rows[rows["inside"].notna()]
    for (law, quantity), g in scored.groupby(["law", "quantity"], sort=False):
        for interval_kind, column in (("law and seed noise", "inside"), ("with the law's misfit", "inside_with_misfit")):
            k, n = int(g[column].sum()), len(g)
            ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
            out.append({"law": law, "quantity": quantity, "interval": interval_kind, "inside": k, "cells": n,
                        "share": k / n, "share_lo": ci.low, "share_hi": ci.high, "nominal": nominal,
                        "consistent": bool(ci.low <= nominal <= ci.high)})
    return pd.DataFrame(out)


def verify(doc: dict, table: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measured vs predicted, calibration); one-line errors for changed runs or nothing measured yet."""
    check_hash(doc, table, path)
    rows = compare(doc, table)
    if not len(rows):
        cells = doc["cells"]
        sizes = ", ".join(f"{n:.3g}" for n in sorted({c["N"] for c in cells}))
        raise ResultsError(f"none of the {len(cells)} cells predicted in {path} has a finished, converged run in "
                           f"sweep {doc['sweep']} yet (N = {sizes}); train them first, then verify")
    return rows, calibration(rows, float(doc.get("ci", 0.95)))


def cell_table(doc: dict) -> pd.DataFrame:
    """The predictions as a flat table (one row per law and cell)."""
    rows = []
    for c in doc["cells"]:
        row = {k: c.get(k) for k in ("law", "regime", "N", "D", "pretrain_budget", "loss", "D_T", "multiplier")}
        for q in ("loss", "D_T", "multiplier"):
            if q + "_ci" in c:
                row[q + "_lo"], row[q + "_hi"] = c[q + "_ci"]
        rows.append(row)
    return pd.DataFrame(rows)


def spent_hours(doc: dict, table: pd.DataFrame) -> tuple[float, int, int]:
    """The process-hours the plan's chosen runs took, from their records: (hours, runs found, runs chosen)."""
    done = table[table["status"] == "done"]
    chosen = [run for c in doc["candidates"] if c["name"] in doc["chosen"] for run in c["runs"]]
    seconds, found = 0.0, 0
    for run in chosen:
        m = done[(done["regime"] == run["regime"]) & np.isclose(done["N"], run["n"], rtol=0.02)
                 & (done["seed"] == run["seed"])]
        if run["budget_tokens"] is not None:
            m = m[np.isclose(m["pretrain_budget_tokens"], run["budget_tokens"], rtol=0.01)]
        if run["d"] is not None:
            m = m[np.isclose(m["D_F"], run["d"], rtol=0.03)]
        if len(m):
            seconds, found = seconds + float(m["wall_time_s"].iloc[0]), found + 1
    return seconds / 3600, found, len(chosen)
