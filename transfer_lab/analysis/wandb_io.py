"""W&B in and out: runs pulled with wandb.Api(), offline run folders read from their binary
run-*.wandb log (`wandb leet inspect --json`), and the analysis logged back as a run.

A W&B run maps onto a RunResult by, in order: a dict summary["results"] (the whole record),
then summary keys named like RunResult fields (bare, or prefixed "results/" or "result/"),
then config keys of those names. Missing run_key/sweep fall back to the run name/group;
status falls back to the run state (finished → done, failed/crashed/killed → failed). A best
validation loss missing from the summary is taken as the minimum of the history's
val/loss (val/loss_per_char) column when there is one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from transfer_lab.analysis.collect import Collection, records_to_table
from transfer_lab.errors import ConfigError, ResultsError
from transfer_lab.study import records

STATE_TO_STATUS = {"finished": "done", "failed": "failed", "crashed": "failed", "killed": "failed",
                   "running": "running", "pending": "running"}
PREFIXES = ("", "results/", "result/", "results.", "result.")
HISTORY_MIN = {"best_val_loss": ("val/loss", "val_loss"),
               "best_val_loss_per_char": ("val/loss_per_char", "val_loss_per_char")}


def to_result(summary: dict, config: dict, *, name: str, group: str | None, state: str,
              history: list[dict] | None = None) -> records.RunResult:
    """One W&B run (summary, config, history) → RunResult."""
    summary, config = dict(summary or {}), dict(config or {})
    if isinstance(summary.get("results"), dict):
        data = dict(summary["results"])
    else:
        data = {}
        for f in fields(records.RunResult):
            for src in (summary, config):
                for pre in PREFIXES:
                    if pre + f.name in src and f.name not in data:
                        v = src[pre + f.name]
                        data[f.name] = v.get("value", v) if isinstance(v, dict) and f.name != "config" else v
    for key, cols in HISTORY_MIN.items():
        if data.get(key) is None and history:
            vals = [h[c] for h in history for c in cols if isinstance(h.get(c), (int, float))]
            if vals:
                data[key] = float(np.nanmin(vals))
    data.setdefault("run_key", name)
    data.setdefault("sweep", group or "wandb")
    data.setdefault("regime", config.get("regime", ""))
    if "status" not in data:
        data["status"] = STATE_TO_STATUS.get(state, "running")
    elif state in ("failed", "crashed", "killed") and data["status"] == "running":
        data["status"] = "failed"
    return records.RunResult.from_dict(data)


def collect_wandb(entity: str | None, project: str, group: str | None = None, api: Any = None,
                  loss: str = "per_char") -> Collection:
    """Pull every run of entity/project (filtered by group) through wandb.Api()."""
    if not project:
        raise ConfigError("source=wandb needs wandb.project (and usually wandb.entity, wandb.group)")
    if api is None:
        import wandb
        try:
            api = wandb.Api(timeout=60)
        except Exception as err:  # no credentials, no server
            raise ResultsError(f"cannot reach W&B ({type(err).__name__}: {err}); log in with `wandb login` "
                               f"or use source=wandb_offline / source=local") from None
    path = f"{entity}/{project}" if entity else project
    filters = {"group": group} if group else {}
    try:
        runs = list(api.runs(path, filters=filters))
    except Exception as err:
        raise ResultsError(f"W&B could not list runs of {path} ({type(err).__name__}: {err}); "
                           f"check wandb.entity/wandb.project") from None
    results = []
    for run in runs:
        summary = getattr(run.summary, "_json_dict", None) or dict(run.summary)
        history = None
        if not any(k in summary for k in ("best_val_loss", "results")):
            try:
                history = list(run.scan_history(keys=["val/loss"]))
            except Exception:
                history = None
        results.append(to_result(summary, dict(run.config), name=run.name or run.id,
                                 group=getattr(run, "group", group), state=getattr(run, "state", "finished"),
                                 history=history))
    if not results:
        raise ResultsError(f"no runs at all in W&B {path}" + (f" group {group}" if group else "")
                           + "; check wandb.entity/project/group")
    return records_to_table(results, group or project, loss=loss, source="wandb")


def _wandb_cli() -> str:
    exe = Path(sys.executable).parent / "wandb"
    return str(exe) if exe.exists() else (shutil.which("wandb") or "wandb")


def read_offline_run(run_dir: Path) -> dict:
    """Config, summary, history, group and state of an offline run from its .wandb log."""
    run_dir = Path(run_dir)
    try:
        out = subprocess.run([_wandb_cli(), "leet", "inspect", "--json", str(run_dir)], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "WANDB_SILENT": "true"})
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ResultsError(f"could not read {run_dir} with `wandb leet inspect` ({err}); "
                           f"install wandb>=0.31 in this environment") from None
    if out.returncode != 0:
        msg = (out.stderr or out.stdout).strip().splitlines()
        raise ResultsError(f"`wandb leet inspect` failed on {run_dir}: {msg[-1] if msg else out.returncode}; "
                           f"the run log may be corrupt: delete the folder or re-run the job")
    run = {"config": {}, "summary": {}, "history": [], "group": None, "name": None, "state": "running",
           "project": None}
    for line in out.stdout.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = rec.get("type")
        body = rec.get(kind) or {}
        if kind == "run":
            run["group"] = body.get("run_group") or run["group"]
            run["name"] = body.get("display_name") or body.get("run_id")
            run["project"] = body.get("project")
            run["config"].update((body.get("config") or {}).get("update") or {})
        elif kind == "config":
            run["config"].update(body.get("update") or {})
        elif kind == "summary":
            run["summary"].update(body.get("update") or {})
        elif kind == "history":
            run["history"].append(body.get("item") or {})
        elif kind == "exit":
            run["state"] = "finished" if int(body.get("exit_code", 0) or 0) == 0 else "failed"
    run["config"].pop("_wandb", None)
    run["config"] = {k: (v.get("value", v) if isinstance(v, dict) and set(v) <= {"value", "desc"} else v)
                     for k, v in run["config"].items()}
    return run


def offline_run_dirs(wandb_dir: Path) -> list[Path]:
    wandb_dir = Path(wandb_dir)
    if any(wandb_dir.glob("run-*.wandb")):
        return [wandb_dir]
    base = wandb_dir / "wandb" if (wandb_dir / "wandb").is_dir() else wandb_dir
    return sorted(p for p in base.glob("*run-*") if p.is_dir() and any(p.glob("run-*.wandb")))


def collect_wandb_offline(wandb_dir: Path, group: str | None = None, loss: str = "per_char") -> Collection:
    dirs = offline_run_dirs(wandb_dir)
    results = []
    for d in dirs:
        run = read_offline_run(d)
        if group and run["group"] != group:
            continue
        results.append(to_result(run["summary"], run["config"], name=run["name"] or d.name, group=run["group"],
                                 state=run["state"], history=run["history"]))
    if not results:
        raise ResultsError(f"no runs at all among the offline W&B runs in {wandb_dir}"
                           + (f" with group {group}" if group else "") + "; check wandb.offline_dir / wandb.group")
    return records_to_table(results, group or results[0].sweep, loss=loss, source="wandb_offline")


def log_analysis(res, report_dir: Path, project: str | None, entity: str | None = None,
                 mode: str | None = None) -> str | None:
    """Log the tidy table, fitted parameters and plots as a job_type='analysis' run; returns its dir."""
    import wandb
    mode = os.environ.get("WANDB_MODE") or mode or "offline"
    run = wandb.init(project=project or "transfer_lab", entity=entity, group=res.sweep, job_type="analysis",
                     name=f"analysis-{res.sweep}", dir=str(report_dir), mode=mode, reinit="finish_previous",
                     config={"sweep": res.sweep, **res.settings})
    try:
        table = res.table.copy()
        for c in table.columns:
            if table[c].dtype == object:
                table[c] = table[c].astype(str)
        run.log({"runs": wandb.Table(dataframe=table)})
        for title, png in getattr(res, "figures", []):
            run.log({f"plots/{Path(png).stem}": wandb.Image(str(png), caption=title)})
        for name, f in res.fits.items():
            if f.ok:
                for p, v in f.params.items():
                    run.summary[f"{name}/{p}"] = v
                    if p in f.ci:
                        run.summary[f"{name}/{p}_ci_lo"], run.summary[f"{name}/{p}_ci_hi"] = f.ci[p]
        return run.dir
    finally:
        run.finish()
