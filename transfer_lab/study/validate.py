"""Config checks that run before any data is built or any step is trained.

Each failure is a ConfigError whose one line names the key, the bad value and the fix.
"""

from __future__ import annotations

import math
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transfer_lab.errors import ConfigError
from transfer_lab.study.devices import check_one_device, check_single_process

REGIMES = ("pretrain", "scratch", "finetune")
SCHEDULES = ("plateau", "cosine")  # transfer_lab/schedule.py
ANNEAL_WINDOWS = ("run", "phase")  # callbacks.PlateauSchedule
ON_PLATEAU = ("continue", "anneal", "stop")  # training/schedule.py fixed_budget
TOKENIZER_KINDS = ("gpt2", "byte", "bpe")  # transfer_lab.data.tokenizers.KINDS
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64", "bf16", "16")
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range
_HAS_FIX = re.compile(r"\b(use|set|choose|pick|raise|lower|delete|remove|fix|give|convert|point|add|check)\b|e\.g\.",
                      re.IGNORECASE)


def get(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception as err:  # an interpolation that cannot resolve, a missing value
        raise ConfigError(f"{key} cannot be read ({type(err).__name__}); set it explicitly, e.g. {key}=...") from None


def as_int(cfg: DictConfig, key: str, minimum: int = 1, maximum: float = math.inf, example: str = "") -> int:
    """An integer (1e5 from the command line arrives as a float: integral floats are accepted)."""
    value = get(cfg, key)
    hint = example or f"{key}={max(minimum, 1)}"
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value, ok = int(value), True
    if not ok:
        raise ConfigError(f"{key}={value!r} must be an integer; e.g. {hint}")
    if not minimum <= value <= maximum:
        bound = f">= {minimum}" if maximum == math.inf else f"in [{minimum}, {int(maximum)}]"
        raise ConfigError(f"{key}={value} is out of range; it must be {bound}, e.g. {hint}")
    return value


def as_float(cfg: DictConfig, key: str, low: float, high: float = math.inf, low_inclusive: bool = False,
             example: str = "") -> float:
    value = get(cfg, key)
    hint = example or f"{key}=..."
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number; e.g. {hint}")
    above = value >= low if low_inclusive else value > low
    if not (above and value <= high):
        bracket = "[" if low_inclusive else "("
        raise ConfigError(f"{key}={value} is out of range {bracket}{low}, {high}]; e.g. {hint}")
    return float(value)


def validate_config(cfg: DictConfig) -> None:
    """Check every user-settable number and name; raise ConfigError on the first problem (in this
    order: the job, the model, the optimiser, the target run, the pre-training, then paths and the rest)."""
    regime = _check_job(cfg)
    _check_model(cfg)
    _check_optim(cfg)
    _check_target_run(cfg, regime)
    if regime != "scratch":
        _check_pretraining(cfg)
    target = get(cfg, "data.target")
    if regime != "pretrain" and (not isinstance(target, str) or not target):
        raise ConfigError(f"data.target={target!r} must name a corpus; e.g. data.target=python")
    _check_paths(cfg)
    _check_tokenizer(cfg)
    _check_trainer(cfg)
    _check_corpora(cfg, regime)
    if regime == "finetune":
        _check_init_from(cfg)


def _check_job(cfg: DictConfig) -> str:
    """The regime (returned: later checks depend on it), the sweep's name, the seed, the threads."""
    regime = get(cfg, "regime")
    if regime not in REGIMES:
        raise ConfigError(f"regime={regime!r} is unknown; use one of {', '.join(REGIMES)}")
    check_sweep_name(get(cfg, "sweep"))
    as_int(cfg, "seed", minimum=0, maximum=MAX_SEED, example="seed=0")
    if get(cfg, "threads") is not None:
        as_int(cfg, "threads", minimum=1, maximum=1024, example="threads=1")
    return regime


def _check_model(cfg: DictConfig) -> None:
    as_int(cfg, "model.n_layer", example="model.n_layer=4")
    n_embd = as_int(cfg, "model.n_embd", example="model.n_embd=128")
    n_head = as_int(cfg, "model.n_head", example="model.n_head=4")
    if n_embd % n_head:
        divisors = [h for h in range(1, min(n_embd, 64) + 1) if n_embd % h == 0]
        raise ConfigError(f"model.n_embd={n_embd} is not divisible by model.n_head={n_head}; "
                          f"pick n_head from {divisors[-6:]}")
    n_positions = as_int(cfg, "model.n_positions", example="model.n_positions=1024")
    as_int(cfg, "model.n_ctx", maximum=n_positions,
           example=f"model.n_ctx={min(n_positions, 1024)} (or raise model.n_positions)")
    as_float(cfg, "model.dropout", 0.0, 0.9, low_inclusive=True, example="model.dropout=0.0")
    as_int(cfg, "model.pad_vocab_multiple", example="model.pad_vocab_multiple=64")
    attention = get(cfg, "model.attn_implementation")
    if attention not in ATTENTION:
        raise ConfigError(f"model.attn_implementation={attention!r} is unknown; use one of {', '.join(ATTENTION)}")
    compile_ = get(cfg, "model.compile")
    if not isinstance(compile_, bool):
        raise ConfigError(f"model.compile={compile_!r} must be true or false; e.g. model.compile=false")


def _check_optim(cfg: DictConfig) -> None:
    as_float(cfg, "optim.lr", 0.0, 1.0, example="optim.lr=3e-3")
    as_float(cfg, "optim.weight_decay", 0.0, 10.0, low_inclusive=True, example="optim.weight_decay=0.1")
    betas = get(cfg, "optim.betas")
    if not (OmegaConf.is_list(betas) or isinstance(betas, (list, tuple))) or len(betas) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"optim.betas={betas!r} must be two numbers in [0, 1); e.g. optim.betas=[0.9,0.95]")
    as_int(cfg, "optim.warmup_steps", minimum=0, example="optim.warmup_steps=50")
    as_float(cfg, "optim.warmup_epochs", 0.0, math.inf, example="optim.warmup_epochs=2")
    if get(cfg, "optim.schedule") not in SCHEDULES:
        raise ConfigError(f"optim.schedule={get(cfg, 'optim.schedule')!r} is unknown; use one of {', '.join(SCHEDULES)}")
    as_float(cfg, "optim.decay", 0.0, 1.0, example="optim.decay=0.316 (the LR factor at each plateau; 1: none)")
    as_float(cfg, "optim.min_lr_ratio", 0.0, 1.0, low_inclusive=True, example="optim.min_lr_ratio=0.1")
    as_float(cfg, "optim.gradient_clip", 0.0, math.inf, example="optim.gradient_clip=1.0")
    as_int(cfg, "optim.batch_size", example="optim.batch_size=16")
    as_int(cfg, "optim.val_batch_size", example="optim.val_batch_size=64")
    as_int(cfg, "optim.max_steps", example="optim.max_steps=20000")
    every = as_int(cfg, "optim.val_every_n_steps", example="optim.val_every_n_steps=100")
    as_float(cfg, "optim.val_every_epochs", 0.0, math.inf, example="optim.val_every_epochs=1")
    as_int(cfg, "optim.min_val_every_n_steps", maximum=every,
           example=f"optim.min_val_every_n_steps={min(5, every)} (at most optim.val_every_n_steps)")
    as_int(cfg, "optim.patience", example="optim.patience=4")
    as_float(cfg, "optim.patience_fraction", 0.0, 1.0, low_inclusive=True, example="optim.patience_fraction=0.25")
    choice(cfg, "optim.anneal_window", ANNEAL_WINDOWS, "run")
    as_float(cfg, "optim.min_rel_improvement", 0.0, 0.5, low_inclusive=True, example="optim.min_rel_improvement=0.002")


def _check_target_run(cfg: DictConfig, regime: str) -> None:
    """The validation set every regime scores on, a fine-tune's own LR and warm-up, D_F (or D)."""
    as_int(cfg, "data.val_tokens", minimum=2, example="data.val_tokens=32768")
    if get(cfg, "data.stopping_val_tokens") is not None:  # more than val_tokens: the whole set
        as_int(cfg, "data.stopping_val_tokens", minimum=2, example="data.stopping_val_tokens=4096 (or null: the whole set)")
    if regime == "finetune":
        if get(cfg, "finetune.lr") is not None:
            as_float(cfg, "finetune.lr", 0.0, 1.0, example="finetune.lr=1e-3")
        if get(cfg, "finetune.warmup_steps") is not None:
            as_int(cfg, "finetune.warmup_steps", minimum=0, example="finetune.warmup_steps=20")
    if regime != "pretrain":
        as_int(cfg, "data.finetune_chars", example="data.finetune_chars=1e5")


def _check_pretraining(cfg: DictConfig) -> None:
    """pretrain.* and the source it reads (a fine-tune's pre-training is checked with it)."""
    chars, tokens = get(cfg, "pretrain.chars"), get(cfg, "pretrain.tokens")
    if (chars is None) == (tokens is None):
        raise ConfigError("set exactly one of pretrain.tokens and pretrain.chars; e.g. pretrain.tokens=3e6 "
                          "pretrain.chars=null")
    as_int(cfg, "pretrain.chars" if chars is not None else "pretrain.tokens", example="pretrain.tokens=3e6")
    as_float(cfg, "pretrain.lr", 0.0, 1.0, example="pretrain.lr=3e-3")
    as_int(cfg, "pretrain.warmup_steps", minimum=0, example="pretrain.warmup_steps=50")
    as_int(cfg, "pretrain.batch_size", example="pretrain.batch_size=16")
    as_int(cfg, "pretrain.patience", example="pretrain.patience=8")
    choice(cfg, "pretrain.on_plateau", ON_PLATEAU, "continue")
    if get(cfg, "pretrain.max_epochs") is not None:
        as_float(cfg, "pretrain.max_epochs", 0.0, math.inf, example="pretrain.max_epochs=4")
    source = get(cfg, "data.source")
    if OmegaConf.is_dict(source):
        _check_mixture(cfg, source)
    elif not isinstance(source, str) or not source:
        raise ConfigError(f"data.source={source!r} must name a corpus or map corpora to weights; "
                          "e.g. data.source=english")


MAX_SWEEP_NAME = 100  # characters: a folder name (255 bytes at most) with room for what is derived from it


def check_sweep_name(sweep: Any) -> None:
    """The sweep names a folder under sweeps/: one plain, printable name of sensible length."""
    if not isinstance(sweep, str) or not sweep or "/" in sweep or sweep.startswith("."):
        raise ConfigError(f"sweep={sweep!r} must be a plain folder name; e.g. sweep=my_study")
    if len(sweep) > MAX_SWEEP_NAME or len(sweep.encode("utf-8")) > 4 * MAX_SWEEP_NAME:
        raise ConfigError(f"sweep={sweep[:20]}... is {len(sweep)} characters long; use a name of at most "
                          f"{MAX_SWEEP_NAME}, e.g. sweep=my_study")
    if not sweep.isprintable():
        raise ConfigError(f"sweep={sweep!r} holds a control character (a newline, a tab); use a plain folder name, "
                          "e.g. sweep=my_study")


PATH_KEYS = ("output_root", "data_dir", "cache_dir", "pretrained_dir", "sweep_dir")


def _check_mixture(cfg: DictConfig, source: DictConfig) -> None:
    """A pre-training mixture {corpus: weight}: two or more corpora, each weight positive (so their sum
    is; they are normalised to sum to 1). A corpus at weight 0 is not in the mixture: drop it."""
    names = list(source)
    if len(names) < 2:
        only = names[0] if names else "english"
        raise ConfigError(f"data.source={OmegaConf.to_container(source)} is a mixture of {len(names)} corpus; "
                          f"name it alone (data.source={only}) or mix two or more, e.g. "
                          f"data.source={{{only}:0.5,code_nonpython:0.5}}")
    for name in names:
        as_float(cfg, f"data.source.{name}", 0.0, math.inf, example=f"data.source.{name}=0.5")


def _check_paths(cfg: DictConfig) -> None:
    """Every folder the tool writes is a folder or can become one: no file sits at it or above it."""
    from pathlib import Path

    for key in PATH_KEYS:
        raw = get(cfg, f"paths.{key}")
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"paths.{key}={raw!r} must be a folder path; e.g. paths.{key}=outputs/...")
        path = Path(raw).expanduser()
        blocking = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            where = "is a file" if blocking == path else f"lies under the file {blocking}"
            raise ConfigError(f"paths.{key}={raw} {where}, not a folder; point it at a folder "
                              f"(e.g. remove the override, or paths.output_root=outputs)")


def _check_tokenizer(cfg: DictConfig) -> None:
    kind = get(cfg, "tokenizer.kind")
    if kind not in TOKENIZER_KINDS:
        raise ConfigError(f"tokenizer.kind={kind!r} is unknown; use one of {', '.join(TOKENIZER_KINDS)} "
                          "(or tokenizer=bpe|byte|gpt2)")
    if kind == "bpe":
        as_int(cfg, "tokenizer.vocab_size", minimum=257, maximum=65535, example="tokenizer.vocab_size=512")
        train_on = get(cfg, "tokenizer.train_on")
        if train_on is not None:
            if not OmegaConf.is_dict(train_on) or not len(train_on):
                raise ConfigError(f"tokenizer.train_on={train_on!r} must map corpora to weights; "
                                  "e.g. tokenizer.train_on={english: 1, python: 1} (or null: the source)")
            for name in train_on:
                as_float(cfg, f"tokenizer.train_on.{name}", 0.0, math.inf, example=f"tokenizer.train_on.{name}=1")
        if get(cfg, "tokenizer.train_chars") is not None:
            as_int(cfg, "tokenizer.train_chars", example="tokenizer.train_chars=5e6")


TRAINER = "pytorch_lightning.Trainer"  # conf/trainer/default.yaml; the fit instantiates nothing else


def _check_trainer(cfg: DictConfig) -> None:
    target = get(cfg, "trainer._target_")
    if target != TRAINER:
        raise ConfigError(f"trainer._target_={target!r} cannot be changed: the trainer is always {TRAINER}; "
                          "remove the override and set trainer.* keys (e.g. trainer.accelerator=cpu) instead")
    as_int(cfg, "trainer.log_every_n_steps", example="trainer.log_every_n_steps=10")
    accelerator = get(cfg, "trainer.accelerator")
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator={accelerator!r} is unknown; use one of {', '.join(ACCELERATORS)}")
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator} but no CUDA GPU is visible here; "
                              "use trainer.accelerator=auto (or cpu)")
    num_nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=None)
    if num_nodes is not None:
        num_nodes = as_int(cfg, "trainer.num_nodes", example="trainer.num_nodes=1")
    check_one_device(get(cfg, "trainer.devices"), num_nodes)  # several: one job per device (devices.py)
    check_single_process()
    precision = get(cfg, "trainer.precision")
    if precision is not None and str(precision) not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is unknown; use null (automatic) or one of "
                          f"{', '.join(PRECISIONS[:6])}")


def _check_corpora(cfg: DictConfig, regime: str) -> None:
    """Every corpus the job reads names a shipped spec or a readable spec file (no data is touched)."""
    from transfer_lab.data.corpora import load_corpus_spec

    source = get(cfg, "data.source")
    named = [(f"data.source.{n}", str(n)) for n in source] if OmegaConf.is_dict(source) else [("data.source", source)]
    train_on = get(cfg, "tokenizer.train_on")
    if OmegaConf.is_dict(train_on):
        named += [(f"tokenizer.train_on.{n}", str(n)) for n in train_on]
    if regime != "pretrain":
        named.append(("data.target", get(cfg, "data.target")))
    for key, name in named:
        try:
            load_corpus_spec(name)
        except ConfigError as err:
            message = " ".join(str(err).split())
            if not _HAS_FIX.search(message):
                message += "; fix the corpus spec or choose another corpus"
            raise ConfigError(f"{key}={name}: {message}") from None


def _check_init_from(cfg: DictConfig) -> None:
    init_from = get(cfg, "pretrain.init_from")
    if init_from is None:
        return
    from pathlib import Path

    from hydra.utils import to_absolute_path

    path = Path(to_absolute_path(str(init_from)))
    if not (path / "config.json").is_file():
        raise ConfigError(f"pretrain.init_from={init_from} has no config.json; point it at a save_pretrained "
                          "folder (e.g. <paths.pretrained_dir>/<key>/model) or set pretrain.init_from=null")


def choice(cfg: DictConfig, key: str, choices: tuple, default: Any = None) -> None:
    value = get(cfg, key)
    value = default if value is None else value
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is unknown; use one of {', '.join(choices)}")


def optional_float(cfg: DictConfig, key: str, low: float, high: float, example: str) -> None:
    if get(cfg, key) is not None:
        as_float(cfg, key, low, high, example=example)


def flag(cfg: DictConfig, key: str) -> None:
    value = get(cfg, key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false; e.g. {key}=false")
