"""Run records: the self-describing folder every run leaves behind.

A run folder (outputs/sweeps/<sweep>/runs/<run_key>/) holds
  config.yaml    the resolved config of the job
  metrics.jsonl  one JSON object per logged point (train and validation curves)
  results.json   the one results file the analysis reads (schema below)
  checkpoints/   Lightning's last/best checkpoints while the run is unfinished

results.json is written atomically (temp file + os.replace), so a kill leaves either the
previous version or the new one, never half a file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
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
STATUSES = (STATUS_RUNNING, STATUS_DONE, STATUS_FAILED)


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
    source_corpus: str | None = None  # pre-training corpus (finetune and pretrain regimes)
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
    pretrain_chars: int | None = None
    pretrain_tokens: int | None = None
    pretrain_flops: float | None = None
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
        known = {f.name for f in fields(cls)}
        missing = {"run_key", "sweep", "regime"} - data.keys()
        if missing:
            raise ResultsError(f"results record lacks {sorted(missing)}; delete the run folder and re-run it")
        return cls(**{k: v for k, v in data.items() if k in known})


def write_result(run_dir: Path, result: RunResult) -> None:
    atomic_write_text(Path(run_dir) / RESULTS_FILE, result.to_json())


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
    if not isinstance(data, dict):
        raise ResultsError(f"{path} is not a results record; delete {path.parent} and re-run that job")
    return RunResult.from_dict(data)


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
