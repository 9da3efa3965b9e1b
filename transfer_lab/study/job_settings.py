"""The Hydra config, read once at the job's edge, as the small typed specs every stage below takes.

run_job validates the config, then calls `read_settings`; nothing below the job sees the config.
`identity_of` also reads the stored config of a record written before records carried their
lineage (lineage.py asks for it through the job).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from transfer_lab.data.run_data import DataSpec, normalised
from transfer_lab.study.keys import MODEL_KEYS, RunIdentity
from transfer_lab.study.tracking import TrackingSpec, scrub
from transfer_lab.training.model import ModelShape, padded_vocab
from transfer_lab.training.schedule import StoppingRule

PATH_KEYS = ("output_root", "data_dir", "cache_dir", "pretrained_dir", "sweep_dir")


@dataclass(frozen=True)
class Paths:
    """conf/paths, absolute: relative paths are relative to where the user launched."""

    output_root: Path
    data_dir: Path  # raw downloads and prepared corpora
    cache_dir: Path  # tokenizers and token files
    pretrained_dir: Path  # pre-trained models, shared by every sweep
    sweep_dir: Path  # this sweep: runs/<run key>/, hydra/<launch>/

    @property
    def sweeps_dir(self) -> Path:
        return self.output_root / "sweeps"


@dataclass(frozen=True)
class ModelSpec:
    """conf/model: a GPT-2 shape and how it is built."""

    n_layer: int
    n_embd: int
    n_head: int
    n_ctx: int  # tokens per training sequence
    n_positions: int  # size of the position table
    dropout: float
    pad_vocab_multiple: int
    attn_implementation: str
    compile: bool

    def shape(self, vocab_size: int) -> ModelShape:
        return ModelShape(n_layer=self.n_layer, n_embd=self.n_embd, n_head=self.n_head, n_ctx=self.n_positions,
                          vocab_size=padded_vocab(vocab_size, self.pad_vocab_multiple), dropout=self.dropout)


@dataclass(frozen=True)
class OptimSpec:
    """conf/optim beyond the stopping rule: the optimiser and batch settings every run shares."""

    batch_size: int
    val_batch_size: int
    weight_decay: float
    betas: tuple[float, float]
    gradient_clip: float
    min_lr_ratio: float
    val_every_n_steps: int
    min_rel_improvement: float
    max_steps: int  # the ceiling of a target run


@dataclass(frozen=True)
class PretrainSpec:
    """conf/pretrain: the budget (tokens or characters of the source) and its own settings."""

    tokens: int | None
    chars: int | None
    lr: float
    warmup_steps: int
    batch_size: int
    patience: int
    on_plateau: str  # continue | anneal | stop (training/schedule.py fixed_budget)
    max_epochs: float  # passes over the source a budget may take
    init_from: Path | None  # a saved model to fine-tune instead of the cache


@dataclass(frozen=True)
class JobSettings:
    regime: str  # pretrain | scratch | finetune
    sweep: str
    seed: int
    threads: int | None
    experiment: str | None  # the experiment= choice the job was launched with
    job_dir: Path | None  # this job's Hydra folder (None outside a Hydra launch)
    launch_dir: Path | None  # the multirun's Hydra folder, shared by its jobs (None: a single run)
    paths: Paths
    data: DataSpec
    val_tokens: int  # the fixed validation set that scores every run
    stopping_val_tokens: int | None  # what early stopping watches (None: all of it)
    model: ModelSpec
    optim: OptimSpec
    stopping: StoppingRule  # for target runs (finetune.* in place for fine-tunes)
    pretrain: PretrainSpec
    trainer: dict[str, Any]  # conf/trainer: pytorch_lightning.Trainer and its arguments
    tracking: TrackingSpec
    identity: RunIdentity
    config: dict[str, Any]  # the resolved config, secrets scrubbed: config.yaml, the record, W&B


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _absolute(path: Any) -> Path:
    from hydra.utils import (
        to_absolute_path,  # outside a Hydra run: relative to the working directory
    )

    return Path(to_absolute_path(str(path)))


def source_weights(source: Any) -> dict[str, float]:
    """data.source as {corpus: weight}: a plain name means that corpus alone."""
    return normalised(source) if isinstance(source, Mapping) else {str(source): 1.0}


def identity_of(config: DictConfig | Mapping) -> RunIdentity:
    """What defines the run a config describes (a job's, or a stored record's)."""
    cfg = config if isinstance(config, DictConfig) else OmegaConf.create(dict(config))
    chars = cfg.data.get("finetune_chars")
    return RunIdentity(
        regime=str(cfg.regime), model={k: cfg.model[k] for k in MODEL_KEYS}, tokenizer=_plain(cfg.tokenizer),
        seed=cfg.seed, optim=_plain(cfg.optim), finetune=_plain(cfg.finetune), pretrain=_plain(cfg.pretrain),
        sources=source_weights(_plain(cfg.data.source)), target=cfg.data.target,
        finetune_chars=None if chars is None else int(float(chars)), val_tokens=cfg.data.val_tokens,
        stopping_val_tokens=cfg.data.stopping_val_tokens)


def _stopping_rule(cfg: DictConfig) -> StoppingRule:
    """optim.*, with finetune.* (lr, warm-up) in place for fine-tuned runs."""
    o = cfg.optim
    own = {k: v for k, v in cfg.finetune.items() if v is not None} if cfg.regime == "finetune" else {}
    return StoppingRule(lr=float(own.get("lr", o.lr)), warmup_steps=int(own.get("warmup_steps", o.warmup_steps)),
                        warmup_epochs=float(o.warmup_epochs), kind=str(o.schedule), decay=float(o.decay),
                        min_lr_ratio=float(o.min_lr_ratio), patience=int(o.patience),
                        patience_fraction=float(o.patience_fraction), min_rel_improvement=float(o.min_rel_improvement),
                        val_every_epochs=float(o.val_every_epochs), min_val_every_n_steps=int(o.min_val_every_n_steps),
                        val_every_n_steps=int(o.val_every_n_steps), max_steps=int(o.max_steps),
                        anneal_window=str(o.get("anneal_window", "run")))


def _launch() -> tuple[str | None, Path | None, Path | None]:
    """(the experiment= choice, the job's Hydra folder, the multirun's); Nones outside a Hydra launch."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return None, None, None
    runtime = hydra_cfg.runtime
    job_dir = Path(runtime.output_dir) if runtime.output_dir else None
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return runtime.choices.get("experiment"), job_dir, Path(str(hydra_cfg.sweep.dir)) if multirun else None


def read_settings(cfg: DictConfig) -> JobSettings:
    """The job's settings from its (validated) config."""
    paths = Paths(**{key: _absolute(cfg.paths[key]) for key in PATH_KEYS})
    m, o, p, log_cfg = cfg.model, cfg.optim, cfg.pretrain, cfg.logger
    chars = cfg.data.get("finetune_chars")
    data = DataSpec(sources=source_weights(_plain(cfg.data.source)),
                    target=None if cfg.data.target is None else str(cfg.data.target),
                    tokenizer=_plain(cfg.tokenizer), finetune_chars=None if chars is None else int(float(chars)),
                    data_dir=paths.data_dir, cache_dir=paths.cache_dir)
    model = ModelSpec(n_layer=int(m.n_layer), n_embd=int(m.n_embd), n_head=int(m.n_head), n_ctx=int(m.n_ctx),
                      n_positions=int(m.n_positions), dropout=float(m.dropout),
                      pad_vocab_multiple=int(m.pad_vocab_multiple), attn_implementation=str(m.attn_implementation),
                      compile=bool(m.compile))
    optim = OptimSpec(batch_size=int(o.batch_size), val_batch_size=int(o.val_batch_size),
                      weight_decay=float(o.weight_decay), betas=tuple(float(b) for b in o.betas),
                      gradient_clip=float(o.gradient_clip), min_lr_ratio=float(o.min_lr_ratio),
                      val_every_n_steps=int(o.val_every_n_steps), min_rel_improvement=float(o.min_rel_improvement),
                      max_steps=int(o.max_steps))
    pretrain = PretrainSpec(tokens=None if p.tokens is None else int(float(p.tokens)),
                            chars=None if p.chars is None else int(float(p.chars)), lr=float(p.lr),
                            warmup_steps=int(p.warmup_steps), batch_size=int(p.batch_size), patience=int(p.patience),
                            on_plateau=str(p.get("on_plateau", "continue")), max_epochs=float(p.get("max_epochs", 4)),
                            init_from=_absolute(p.init_from) if p.get("init_from") else None)
    config = scrub(_plain(cfg))
    tracking = TrackingSpec(enabled=bool(log_cfg.get("enabled")), project=log_cfg.get("project"),
                            entity=log_cfg.get("entity"), group=log_cfg.get("group"), mode=log_cfg.get("mode"),
                            save_dir=Path(str(log_cfg.save_dir)) if log_cfg.get("save_dir") else None)
    threads = cfg.get("threads")
    experiment, job_dir, launch_dir = _launch()
    return JobSettings(regime=str(cfg.regime), sweep=str(cfg.sweep), seed=int(cfg.seed),
                       threads=int(threads) if threads else None, experiment=experiment, job_dir=job_dir,
                       launch_dir=launch_dir,
                       paths=paths,
                       data=data, val_tokens=int(cfg.data.val_tokens),
                       stopping_val_tokens=None if cfg.data.stopping_val_tokens is None
                       else int(cfg.data.stopping_val_tokens),
                       model=model, optim=optim, stopping=_stopping_rule(cfg), pretrain=pretrain,
                       trainer=_plain(cfg.trainer), tracking=tracking, identity=identity_of(cfg), config=config)
