"""Runs → one tidy table (one row per run), with the runs that cannot be used listed, not dropped.

Sources: local run folders (outputs/sweeps/<sweep>/runs/<run_key>/results.json), W&B
(see wandb_io.py; both yield RunResult records that pass through `records_to_table`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_lab.errors import ResultsError
from transfer_lab.study import records

ENV_OUTPUTS = "TRANSFER_LAB_OUTPUTS"
FIT_REGIMES = ("scratch", "finetune")
LOSS_COLUMNS = {"per_char": "loss_per_char", "per_token": "loss_per_token"}

COLUMNS = ["run_key", "sweep", "regime", "status", "N", "total_params", "n_layer", "n_embd", "n_head", "D_F", "D_F_tokens",
           "pretrain_key", "pretrain_budget", "pretrain_budget_tokens", "pretrain_chars", "pretrain_tokens",
           "pretrain_flops", "pretrain_epochs", "pretrain_rule",
           "loss_per_token", "loss_per_char", "bits_per_char", "loss", "steps", "tokens_seen",
           "train_flops", "tokenizer", "val_set", "source_corpus", "source_mix", "target_corpus", "target_corpus_chars",
           "experiment", "seed",
           "stop_reason", "converged", "not_converged_why", "best_step", "lr", "lr_decays", "wall_time_s",
           "finished_at", "excluded", "reason"]
NOT_CONVERGED_FIX = ("its loss is not an early-stopping point: raise optim.max_steps (the ceiling) or, for a best "
                     "point inside warm-up, lower finetune.lr / optim.warmup_steps, and re-run the cell")
# what makes two runs the same point of a fit; runs of one cell with other settings (an edited
# config re-run under the same sweep name) are not averaged: the newest one is kept
CELL = ("regime", "N", "D_F", "seed", "pretrain_budget", "source_mix", "target_corpus")


@dataclass
class Collection:
    sweep: str
    table: pd.DataFrame  # every run, with `excluded` and `reason`
    notes: list[str] = field(default_factory=list)
    source: str = "local"

    @property
    def usable(self) -> pd.DataFrame:
        return self.table[~self.table["excluded"]]

    @property
    def excluded(self) -> pd.DataFrame:
        return self.table[self.table["excluded"]]


def output_root(configured: str | os.PathLike | None = None) -> Path:
    """The outputs folder: the configured path, else $TRANSFER_LAB_OUTPUTS, else ./outputs."""
    return Path(configured or os.environ.get(ENV_OUTPUTS) or "outputs")


def latest_sweep(root: Path) -> str:
    """The sweep whose newest results.json was modified last."""
    best, best_time = None, -math.inf
    for path in (root / "sweeps").glob(f"*/runs/*/{records.RESULTS_FILE}"):
        try:
            mtime = path.stat().st_mtime
        except OSError:  # a symbolic-link loop in a record's place: that run's business
            continue
        if mtime > best_time:
            best, best_time = path.parents[2].name, mtime
    if best is None:
        raise ResultsError(f"no runs at all under {root / 'sweeps'}; run a sweep first "
                           f"(make sweep) or point paths.output_root / {ENV_OUTPUTS} at your outputs")
    return best


def sweep_dir(root: Path, sweep: str) -> Path:
    return root / "sweeps" / sweep


def load_local(sweep_path: Path) -> tuple[list[records.RunResult], list[dict]]:
    """Every run folder's record; folders without results.json come back as 'missing' rows."""
    runs_dir = Path(sweep_path) / "runs"
    found, missing = [], []
    # hidden folders are staging copies a kill may leave (lineage.copy_run), not runs
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) if runs_dir.is_dir() else []
    for folder in folders:
        path = folder / records.RESULTS_FILE
        if not os.path.lexists(path):
            missing.append({"run_key": folder.name, "sweep": Path(sweep_path).name, "regime": "",
                            "status": "running", "excluded": True,
                            "reason": "no results.json (unfinished or never started)"})
            continue
        if not path.is_file():  # a folder or a symbolic-link loop in its place: one run's fault, not the sweep's
            missing.append({"run_key": folder.name, "sweep": Path(sweep_path).name, "regime": "",
                            "status": "unreadable", "excluded": True,
                            "reason": "results.json is not a file (a folder or a symbolic-link loop); the next "
                                      "launch of the sweep sets it aside and trains the run again"})
            continue
        found.append(records.read_result(folder))  # a corrupt file raises ResultsError naming it
    return found, missing


def _num(value) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _row(r: records.RunResult) -> dict:
    return {
        "run_key": r.run_key, "sweep": r.sweep, "regime": r.regime, "status": r.status,
        "N": _num(r.non_embedding_params or None), "total_params": _num(r.total_params or None),
        "n_layer": r.n_layer, "n_embd": r.n_embd, "n_head": r.n_head,
        "target_corpus_chars": _num(r.target_corpus_chars), "experiment": r.experiment,
        "D_F": _num(r.finetune_chars), "D_F_tokens": _num(r.finetune_tokens),
        "pretrain_key": r.pretrain_key, "pretrain_chars": _num(r.pretrain_chars),
        "pretrain_tokens": _num(r.pretrain_tokens), "pretrain_flops": _num(r.pretrain_flops),
        "pretrain_budget": _num(_nominal_budget(r)[1]), "pretrain_budget_tokens": _num(_nominal_budget(r)[0]),
        "pretrain_epochs": _num(r.pretrain_epochs if r.regime != "pretrain" else r.epochs_seen),
        "pretrain_rule": r.pretrain_on_plateau,
        "loss_per_token": _num(r.best_val_loss), "loss_per_char": _num(r.best_val_loss_per_char),
        "bits_per_char": _num(r.best_val_bits_per_char), "steps": r.steps, "tokens_seen": r.tokens_seen,
        "train_flops": _num(r.train_flops), "tokenizer": r.tokenizer or "", "val_set": r.val_set or "",
        "source_corpus": r.source_corpus, "source_mix": mix_label(source_weights_of(r)),
        "target_corpus": r.target_corpus, "seed": r.seed,
        "stop_reason": r.stop_reason, "error": r.error, "finished_at": r.finished_at, "best_step": r.best_step,
        "lr": _num((r.schedule or {}).get("lr")), "lr_decays": r.lr_decays, "wall_time_s": _num(r.wall_time_s),
        # records older than the verdict: a run that ended at its step cap did not early-stop
        "converged": r.converged if r.converged is not None else (
            None if r.regime == "pretrain" else r.stop_reason != "max_steps"),
        "not_converged_why": r.not_converged_why or (
            "ended at its step cap (max_steps) without early stopping"
            if r.converged is None and r.regime != "pretrain" and r.stop_reason == "max_steps" else ""),
    }


def source_weights_of(r: records.RunResult) -> dict[str, float]:
    """{corpus: weight} (summing to 1) a fine-tune's model was pre-trained on; {} for from-scratch runs.
    Records from before weights were recorded: the config's data.source."""
    if r.regime == "scratch" or not r.source_corpus:
        return {}
    weights = r.source_weights or ((r.config or {}).get("data") or {}).get("source") or r.source_corpus
    weights = weights if isinstance(weights, dict) else {str(weights): 1.0}
    total = sum(float(w) for w in weights.values())
    return {str(name): float(w) / total for name, w in sorted(weights.items())}


def mix_label(weights: dict[str, float]) -> str | None:
    """'english' for one corpus, 'code_nonpython 25% + english 75%' for a mixture (names sorted)."""
    if len(weights) == 1:
        return next(iter(weights))
    return " + ".join(f"{name} {w:.0%}" for name, w in weights.items()) or None


def _nominal_budget(r: records.RunResult) -> tuple[float | None, float | None]:
    """(tokens, characters) of the pre-training budget a run was planned with: the study's axis.
    Records from before budgets were recorded: the config's pretrain.tokens (or chars), converted at
    the consumed characters per token; else what was consumed."""
    if r.pretrain_budget_chars is not None:
        return r.pretrain_budget_tokens, r.pretrain_budget_chars
    if r.regime == "pretrain":
        return r.tokens_seen or None, r.chars_seen or None
    planned = (r.config or {}).get("pretrain", {}) if isinstance(r.config, dict) else {}
    per_token = r.pretrain_chars / r.pretrain_tokens if r.pretrain_chars and r.pretrain_tokens else None
    if planned.get("tokens") and per_token:
        return float(planned["tokens"]), float(planned["tokens"]) * per_token
    if planned.get("chars") and per_token:
        return float(planned["chars"]) / per_token, float(planned["chars"])
    return r.pretrain_tokens, r.pretrain_chars


def _cell(row: dict) -> tuple:
    return tuple(str(row[c]) for c in CELL)


def _mark_superseded(rows: list[dict], loss_col: str) -> None:
    """One run per cell. Runs of a cell that differ only in learning rate are a learning-rate grid:
    the cell's result is its best run (Hernandez et al. tuned nothing for fine-tuning; a grid per
    cell takes the better rate where one rate cannot serve every subset). Otherwise they are the
    same cell re-run with other settings: the newest is kept."""
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        if not row["excluded"] and row["regime"] in FIT_REGIMES:
            cells.setdefault(_cell(row), []).append(row)
    for group in cells.values():
        if len(group) < 2:
            continue
        rates = [row["lr"] for row in group]
        if len(set(rates)) == len(group) and all(np.isfinite(rates)):
            group.sort(key=lambda r: r[loss_col])
            for other in group[1:]:
                other["reason"] = (f"learning-rate grid: lr={other['lr']:g} reached {other[loss_col]:.4f}, "
                                   f"lr={group[0]['lr']:g} ({group[0]['run_key']}) {group[0][loss_col]:.4f}; "
                                   "the cell keeps its best rate")
                other["excluded"] = True
            continue
        group.sort(key=lambda r: (r.get("finished_at") or "", r["run_key"]))
        for old in group[:-1]:
            old["reason"] = f"superseded by {group[-1]['run_key']} (same cell, other settings; the newest is kept)"
            old["excluded"] = True


def _mark_extended(rows: list[dict]) -> None:
    """A run its ceiling stopped, that a higher ceiling then extended to convergence (another
    key, same cell and learning rate, more steps), is that converged run's past, not a missing point."""
    def cell_and_rate(row):
        return _cell(row) + (str(row["lr"]),)

    done = {}
    for row in rows:
        if not row["excluded"] and row["regime"] in FIT_REGIMES and row["converged"]:
            done.setdefault(cell_and_rate(row), []).append(row)
    for row in rows:
        if row["excluded"] and row["converged"] is False and row["reason"].startswith("not converged"):
            later = [r for r in done.get(cell_and_rate(row), []) if (r["steps"] or 0) > (row["steps"] or 0)]
            if later:
                row["reason"] = (f"extended: stopped by its ceiling at step {row['steps']}, the same run went on "
                                 f"to converge as {later[0]['run_key']}")


def _exclusion(row: dict, loss_col: str) -> str:
    if row["status"] != records.STATUS_DONE:
        why = f": {row['error']}" if row.get("error") else ""
        return f"status {row['status']}{why}"
    if row["regime"] not in FIT_REGIMES + ("pretrain",):
        return f"unknown regime {row['regime']!r}"
    if row["regime"] == "pretrain":
        return ""  # kept in the table (compute, budgets), never in a target-loss fit
    if not (row["N"] > 0):
        return "no non_embedding_params (N)"
    if not (row["D_F"] > 0):
        return "no finetune_chars (D_F / D)"
    if row["converged"] is False:
        return f"not converged: {row['not_converged_why']}; {NOT_CONVERGED_FIX}"
    loss = row[loss_col]
    if not np.isfinite(loss):
        return f"{loss_col} is NaN or missing"
    if loss <= 0:
        return f"{loss_col} is not positive ({loss})"
    return ""


def records_to_table(runs: list[records.RunResult], sweep: str, loss: str = "per_char",
                     extra_rows: list[dict] | None = None, source: str = "local",
                     one_val_set: bool = True) -> Collection:
    """Build the tidy table; raises ResultsError for duplicate run keys and for mixed
    tokenizers / validation sets among the runs a fit would use (one_val_set=False: a table
    compared cell by cell, e.g. an atlas's, where each target has its own)."""
    if loss not in LOSS_COLUMNS:
        raise ResultsError(f"analysis loss {loss!r} unknown; use one of {sorted(LOSS_COLUMNS)}")
    loss_col = LOSS_COLUMNS[loss]
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.run_key] = seen.get(r.run_key, 0) + 1
    dups = sorted(k for k, c in seen.items() if c > 1)
    if dups:
        raise ResultsError(f"duplicate run keys in sweep {sweep}: {', '.join(dups[:5])}; "
                           f"remove the duplicated run folders (or W&B runs) and re-run the analysis")
    rows = []
    for r in runs:
        row = _row(r)
        row["loss"] = row[loss_col]
        row["reason"] = _exclusion(row, loss_col)
        row["excluded"] = bool(row["reason"])
        rows.append(row)
    _mark_superseded(rows, loss_col)
    _mark_extended(rows)
    for extra in extra_rows or []:
        rows.append({**{c: None for c in COLUMNS}, **extra})
    table = pd.DataFrame(rows, columns=COLUMNS)
    if len(table):
        table["excluded"] = table["excluded"].astype(bool)
    notes = []
    # finished target runs, whatever else excludes them: a sweep that mixes tokenizers is malformed
    fit_rows = table[(table["status"] == records.STATUS_DONE) & table["regime"].isin(FIT_REGIMES)] if len(table) else table
    must_agree = [("tokenizer", "tokenizers")] + ([("val_set", "validation sets")] if one_val_set else [])
    for col, what in must_agree:
        values = sorted({v for v in fit_rows[col] if v}) if len(fit_rows) else []
        if len(values) > 1:
            raise ResultsError(f"sweep {sweep} mixes {len(values)} {what} ({', '.join(values[:3])}) among its "
                               f"scratch/fine-tune runs; analyse one {col} at a time (split the sweep)")
        if len(fit_rows) and any(not v for v in fit_rows[col]):
            notes.append(f"some runs do not record their {col}; mixing could not be ruled out")
    if len(table):
        table = table.sort_values(["regime", "N", "D_F", "run_key"], na_position="last").reset_index(drop=True)
    return Collection(sweep=sweep, table=table, notes=notes, source=source)


def collect_local(root: Path, sweep: str | None = None, loss: str = "per_char", one_val_set: bool = True) -> Collection:
    root = Path(root)
    name = sweep or latest_sweep(root)
    path = sweep_dir(root, name)
    if not path.is_dir():
        raise ResultsError(f"sweep folder {path} does not exist; check sweep= (existing: "
                           f"{', '.join(sorted(p.name for p in (root / 'sweeps').glob('*'))[:5]) or 'none'})")
    runs, missing = load_local(path)
    # one run in two folders (a converged run reused under a higher ceiling's key) is one run;
    # two different runs under one key are an error (records_to_table)
    runs = list({json.dumps({**dataclasses.asdict(r), "sweep": None}, sort_keys=True, default=str): r
                 for r in runs}.values())
    if not runs and not missing:
        raise ResultsError(f"no runs at all in {path / 'runs'}; run the sweep first")
    return records_to_table(runs, name, loss=loss, extra_rows=missing, one_val_set=one_val_set)


# the exclusions an analysis adds (a point above a smaller D's loss); a committed table.csv carries them,
# and a re-analysis decides them afresh
ANALYSIS_EXCLUSIONS = ("non_monotone",)
TABLE_REQUIRED = ("run_key", "regime", "status", "N", "D_F", "loss_per_char", "loss_per_token", "excluded", "reason")


def collect_table(path: Path, loss: str = "per_char") -> Collection:
    """A table.csv an analysis wrote (report/table.csv, docs/results/<study>/table.csv) read back as the
    runs table: its record columns, with the exclusions the records decide (failed, not converged,
    superseded) kept and those an analysis decides reset, so the same runs give the same analysis."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"table {path} does not exist; point table= at a table.csv written by analyze.py")
    try:
        table = pd.read_csv(path, float_precision="round_trip")  # the bits written, not a fast approximation
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ResultsError(f"table {path} cannot be read as CSV ({type(err).__name__}); restore it (git checkout)") from None
    missing = [c for c in TABLE_REQUIRED if c not in table.columns]
    if missing:
        raise ResultsError(f"{path} is not a runs table: no column {', '.join(missing[:4])}; use the table.csv "
                           "analyze.py writes beside report.md")
    table = table.reindex(columns=COLUMNS).copy()  # columns newer than the table: empty
    if table["pretrain_budget"].isna().all():  # tables from before budgets were recorded: what was consumed
        table["pretrain_budget"], table["pretrain_budget_tokens"] = table["pretrain_chars"], table["pretrain_tokens"]
    table["loss"] = table[LOSS_COLUMNS[loss]]
    table["reason"] = table["reason"].fillna("").astype(str)
    again = table["reason"].str.startswith(ANALYSIS_EXCLUSIONS)
    table.loc[again, "reason"] = ""
    table["excluded"] = table["reason"] != ""
    for col in ("not_converged_why", "source_mix", "tokenizer", "val_set", "pretrain_key", "experiment", "finished_at",
                "stop_reason", "pretrain_rule", "source_corpus", "target_corpus"):
        table[col] = table[col].where(table[col].notna(), None)
    table["converged"] = table["converged"].map(lambda v: None if pd.isna(v) else bool(v) if not isinstance(v, str)
                                                else v == "True")
    sweep = str(table["sweep"].dropna().iloc[-1]) if table["sweep"].notna().any() else path.parent.name
    return Collection(sweep=sweep, table=table, notes=[f"runs read from {path}, not from run folders"], source="table")
