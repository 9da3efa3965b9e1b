"""Run records: the self-describing folder every run leaves behind.

A run folder (outputs/sweeps/<sweep>/runs/<run_key>/) holds
  config.yaml    the resolved config of the job
  metrics.jsonl  one JSON object per logged point (train and validation curves)
  results.json   the one results file the analysis reads (schema below)
  checkpoints/   Lightning's last/best checkpoints while the run is unfinished

results.json is written atomically (temp file + os.replace), so a kill leaves either the
previous version or the new one, never half a file. A `done` record is final: no later write
replaces it with an unfinished or failed one. Reading checks every field's type, so a hand-edited
or foreign record is one error naming the field, never a value silently read as another.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from transfer_lab.atomic_files import atomic_write_text
from transfer_lab.errors import ResultsError
from transfer_lab.training.run_files import METRICS_FILE

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"

STATUS_RUNNING = "running"
STATUS_DONE = "done"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"  # a signal stopped it at a step boundary; its checkpoint resumes it
STATUSES = (STATUS_RUNNING, STATUS_DONE, STATUS_FAILED, STATUS_INTERRUPTED)


@dataclass
class RunResult:
    """One row of the results table. Losses are nats; 'per_char' divides by characters."""

    run_key: str
    sweep: str
    regime: str  # pretrain | scratch | finetune
    lineage: str = ""  # the run key without the step ceiling: one run, however far it was extended
    status: str = STATUS_RUNNING
    error: str | None = None
    # data
    source_corpus: str | None = None  # pre-training corpus (finetune and pretrain regimes); a mixture joins names by +
    source_weights: dict[str, Any] = field(default_factory=dict)  # {corpus: weight}, summing to 1 (a mixture's axis)
    target_corpus: str | None = None  # corpus trained on for scratch/finetune
    target_corpus_chars: int | None = None  # its training characters: the largest D a study can ask for
    experiment: str | None = None  # conf/experiment choice the run was launched with
    tokenizer: str = ""  # tokenizer id (kind, size and content hash)
    val_set: str = ""  # id of the fixed validation set the losses are measured on
    val_tokens: int = 0
    val_chars: int = 0
    finetune_chars: int | None = None  # D_F, characters (None for pre-training)
    finetune_tokens: int | None = None
    pretrain_key: str | None = None  # which pre-trained model a finetune started from
    pretrain_chars: int | None = None  # what the pre-training consumed (characters, tokens, FLOPs)
    pretrain_tokens: int | None = None
    pretrain_flops: float | None = None
    pretrain_budget_tokens: int | None = None  # the nominal budget (pretrain.tokens, or chars in tokens): the axis
    pretrain_budget_chars: int | None = None  # the same budget in characters of the source
    pretrain_epochs: float | None = None  # passes over the source the budget took
    pretrain_on_plateau: str | None = None  # the pre-training's rule at a plateau (None: made before it had one)
    # model
    n_layer: int = 0
    n_embd: int = 0
    n_head: int = 0
    n_ctx: int = 0
    vocab_size: int = 0
    non_embedding_params: int = 0  # N: all parameters but wte and wpe
    total_params: int = 0
    seed: int = 0
    # outcome
    best_val_loss: float | None = None  # nats/token, the whole validation set at the early-stopping point
    best_val_loss_per_char: float | None = None  # nats/char
    best_val_bits_per_char: float | None = None
    best_stopping_val_loss: float | None = None  # nats/token on the subset early stopping watched
    best_step: int | None = None
    best_tokens_seen: int | None = None
    best_chars_seen: int | None = None
    final_val_loss: float | None = None
    steps: int = 0
    tokens_seen: int = 0
    chars_seen: int = 0
    epochs_seen: float = 0.0  # passes over the training subset
    train_flops: float = 0.0  # (6·N + attention) FLOPs per token × tokens seen
    stop_reason: str = ""  # early_stop | max_steps | diverged | error
    # a converged early-stopping point: early-stopped (not at the ceiling), best point after warm-up;
    # None for pre-training, whose budget is its horizon by design
    converged: bool | None = None
    not_converged_why: str = ""
    lr_decays: int = 0  # plateaus that annealed the LR (restoring the best weights) before the one that stopped
    schedule: dict[str, Any] = field(default_factory=dict)  # lr, warm-up, horizon, ceiling, validation interval
    finished_at: str = ""  # UTC time the run ended (ISO 8601)
    wall_time_s: float = 0.0
    tokens_per_s: float = 0.0
    schema_version: int = SCHEMA_VERSION
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, allow_nan=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunResult":
        known = {f.name: f for f in fields(cls)}
        missing = {"run_key", "sweep", "regime"} - data.keys()
        if missing:
            raise ResultsError(f"results record lacks {sorted(missing)}; delete the run folder and re-run it")
        for name, value in data.items():
            if name in known and not _is_a(value, str(known[name].type)):
                raise ResultsError(f"results field {name}={value!r} is not {_KINDS[str(known[name].type)][0]} (edited, "
                                   "or written by another tool); delete the run folder and re-run it")
        if data.get("status", STATUS_RUNNING) not in STATUSES:
            raise ResultsError(f"results field status={data['status']!r} is not one of {', '.join(STATUSES)}; "
                               "delete the run folder and re-run it")
        return cls(**{k: v for k, v in data.items() if k in known})


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# what each annotation of RunResult accepts when read back from JSON
_KINDS = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "str | None": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "int": ("a number", _number),
    "float": ("a number", _number),
    "int | None": ("a number or null", lambda v: v is None or _number(v)),
    "float | None": ("a number or null", lambda v: v is None or _number(v)),
    "bool | None": ("true, false or null", lambda v: v is None or isinstance(v, bool)),
    "dict[str, Any]": ("a mapping", lambda v: isinstance(v, dict)),
}


def _is_a(value: Any, annotation: str) -> bool:
    return _KINDS[annotation][1](value)


def write_result(run_dir: Path, result: RunResult) -> None:
    """Write results.json, unless that would replace a finished record with an unfinished one. A run
    its step ceiling stopped (done, converged: false) may be extended by its own lineage."""
    path = Path(run_dir) / RESULTS_FILE
    if result.status != STATUS_DONE and path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}  # a torn record is no finished result
        if isinstance(old, dict) and old.get("status") == STATUS_DONE:
            extended = old.get("converged") is False and old.get("lineage") and old.get("lineage") == result.lineage
            if not extended:
                raise ResultsError(f"{path} records a finished run; a {result.status} result may not replace it "
                                   "(another process trained the same run: one of them should not have)")
    atomic_write_text(path, result.to_json())


def read_result(run_dir: Path) -> RunResult:
    """Read a run's results.json; a torn or foreign file is a ResultsError naming the folder."""
    path = Path(run_dir) / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{path} does not exist; run the job again to produce it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path} is corrupt ({err.msg if hasattr(err, 'msg') else err}); "
                           f"delete {path.parent} and re-run that job") from None
    except OSError as err:  # a folder, a symbolic-link loop, a device in its place
        raise ResultsError(f"{path} is not a readable file ({type(err).__name__}: {err.strerror or err}); "
                           f"move it aside (re-running the sweep does) and re-run that job") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path} is not a results record; delete {path.parent} and re-run that job")
    try:
        return RunResult.from_dict(data)
    except ResultsError as err:
        raise ResultsError(f"{path}: {err}".replace("delete the run folder", f"delete {path.parent}")) from None


def set_aside(run_dir: Path, why: str) -> Path:
    """Rename results.json to results.json.<why>-<time>: kept, never deleted, no longer the run's record."""
    path = Path(run_dir) / RESULTS_FILE
    aside = path.with_name(f"{RESULTS_FILE}.{why}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
    path.rename(aside)
    return aside


def read_own_result(run_dir: Path, log) -> RunResult | None:
    """A job's own earlier record, or None. A torn or invalid one is set aside (renamed
    results.json.unreadable-<time>, never deleted) with a warning, and the run is trained again."""
    path = Path(run_dir) / RESULTS_FILE
    if not os.path.lexists(path):  # a symbolic-link loop "does not exist", yet it blocks the record
        return None
    try:
        return read_result(run_dir)
    except ResultsError as err:
        aside = set_aside(run_dir, "unreadable")
        log(f"warning: {err}; kept as {aside.name}, the run is trained again")
        return None


def mark_failed(run_dir: Path, reason: str, blank: RunResult) -> None:
    """Record a failure the training loop did not see (it happened around it) in the run's record, or
    in `blank` where there is none yet; a finished record is left as it is."""
    try:
        result = read_result(run_dir)
    except ResultsError:
        result = blank
    if result.status == STATUS_DONE:
        return
    result.status, result.stop_reason, result.error = STATUS_FAILED, "error", reason
    write_result(run_dir, result)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Read metrics.jsonl, ignoring a last line cut by a kill mid-write."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn final line: the points before it are intact
    return rows
