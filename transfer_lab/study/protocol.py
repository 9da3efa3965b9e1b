"""The study protocol: which runs a transfer study needs, and which data grid each regime gets.

A study crosses everything swept (model sizes, seeds, sources, ...) with three regimes:

  pretrain   one per size (and source, budget, seed): trained once, reused by every fine-tune
  scratch    at every D of the from-scratch grid   (data.scratch_chars)
  finetune   at every D_F of the fine-tune grid    (data.finetune_chars)

The two grids are declared apart because they must differ: with the paper's physics a
fine-tuned model matches a from-scratch one trained on 100-1000× its D_F, so D_E can only be
interpolated from a scratch grid that reaches 1-3 decades above the largest D_F. Without a
scratch grid, scratch runs fall back to the fine-tune grid (and the analysis says what is missing).

Read by train.py (StudySweeper expands a multirun), transfer_lab.study.launch_checks (every cell is checked
before the first trains), analyze.py action=plan (the runs that would close a gap) and the atlas.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

FINETUNE_GRID = "data.finetune_chars"  # D_F of fine-tuned runs; a job's own data size, whatever its regime
SCRATCH_GRID = "data.scratch_chars"  # D of from-scratch runs (multirun only)
REGIME = "regime"
REGIMES = ("pretrain", "scratch", "finetune")
SOURCE, TARGET = "data.source", "data.target"
# what each regime does not read: sweeping it makes no new job of that regime
IGNORED_BY = {"pretrain": (TARGET, "finetune"), "scratch": (SOURCE, "pretrain", "finetune"), "finetune": ()}


@dataclass(frozen=True)
class Cell:
    """One job: the overrides that compose its config."""

    regime: str
    chars: str | None  # the job's data.finetune_chars (None: pre-training)
    rest: tuple[str, ...]  # every other swept or fixed override (model size, seed, ...)

    @property
    def overrides(self) -> list[str]:
        own = [f"{REGIME}={self.regime}"] + ([f"{FINETUNE_GRID}={self.chars}"] if self.chars is not None else [])
        return list(self.rest) + own


def expand(dimensions: dict[str, list[str]]) -> list[Cell]:
    """Every job of a multirun, from {key: values} (the experiment's sweeper params with the
    command line's overrides applied; a fixed value is a one-element list).

    Fine-tunes take the D_F grid, scratch runs the D grid (or the D_F grid where none is given),
    and each size gets one explicit pre-training job ahead of its fine-tunes, so that parallel
    workers never wait on each other's pre-training lock. Order: pre-training, then scratch, then
    fine-tuning, larger data first (long jobs first balances parallel workers)."""
    dims = dict(dimensions)
    regimes = dims.pop(REGIME, ["finetune"])
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown:
        raise ValueError(f"regime={unknown[0]} is unknown; use {', '.join(REGIMES)}")
    finetune_grid = dims.pop(FINETUNE_GRID, None)
    scratch_grid = dims.pop(SCRATCH_GRID, None) or finetune_grid
    combos = [dict(zip(dims, values)) for values in itertools.product(*dims.values())]
    cells: list[Cell] = []
    if "finetune" in regimes or "pretrain" in regimes:
        cells += [Cell("pretrain", None, r) for r in _shared(combos, IGNORED_BY["pretrain"])]
    for regime, grid in (("scratch", scratch_grid), ("finetune", finetune_grid)):
        if regime in regimes:
            values = sorted(grid or [None], key=lambda v: -float(v) if v is not None else 0)
            rests = _shared(combos, IGNORED_BY[regime])
            if regime == "finetune":  # transfer needs two distributions: A → A is no pair
                pairs = [r for r in rests if _value(r, SOURCE) is None or _value(r, SOURCE) != _value(r, TARGET)]
                if rests and not pairs:
                    raise ValueError(f"every fine-tune would have data.source = data.target ({_value(rests[0], SOURCE)}): "
                                     "transfer needs two corpora; name a different data.target (or two or more "
                                     "corpora for an atlas)")
                rests = pairs
            cells += [Cell(regime, v, r) for v in values for r in rests]
    return cells


def _line(key: str, value: str | None) -> str:
    return key if value is None else f"{key}={value}"


def _shared(combos: list[dict], ignored: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The distinct jobs of a regime: swept keys it does not read are dropped, so what is shared is
    planned (and trained) once, e.g. one scratch curve per target whatever the sources. A fixed
    value stays: it can still matter indirectly (a BPE learned on the one source serves the
    scratch runs too)."""
    swept = {k for k in (combos[0] if combos else {}) if len({c[k] for c in combos}) > 1}
    out = {}
    for combo in combos:
        rest = tuple(_line(k, v) for k, v in combo.items()
                     if not (k in swept and any(k == i or k.startswith(i + ".") for i in ignored)))
        out.setdefault(rest, None)
    return list(out)


def _value(rest: tuple[str, ...], key: str) -> str | None:
    return next((line.partition("=")[2] for line in rest if line.partition("=")[0] == key), None)


def _names_size(line: str) -> bool:
    key = line.partition("=")[0].lstrip("+~")
    return key == "model" or key.startswith("model.")


def experiment_params(params: dict[str, str], command_line: list[str]) -> list[str]:
    """The experiment's sweeper params as override lines. Model sizes are one dimension: a command
    line that names sizes (model=... or model.<key>=...) replaces the experiment's sizes instead of
    crossing with them, so `-m model.n_layer=2,4,8` means three sizes whatever the experiment sweeps.
    Likewise a scratch-only command line's data.finetune_chars is its D grid."""
    sizes_given = any(_names_size(arg) for arg in command_line)
    keys = {arg.partition("=")[0].lstrip("+~") for arg in command_line}
    regimes = [arg.partition("=")[2] for arg in command_line if arg.partition("=")[0] == REGIME]
    # `regime=scratch data.finetune_chars=a,b` trains from scratch at a and b: the command line's
    # D is the scratch grid unless it names one, so the experiment's scratch grid does not apply
    scratch_only = bool(regimes) and "finetune" not in regimes[-1].split(",")
    own_grid = scratch_only and FINETUNE_GRID in keys and SCRATCH_GRID not in keys
    return [f"{key}={value}" for key, value in params.items()
            if not (sizes_given and _names_size(key)) and not (own_grid and key == SCRATCH_GRID)]


def dimensions(overrides) -> dict[str, list[str]]:
    """{key: values} from Hydra Override objects (sweeper params first, then the command line: a
    later value of a key replaces an earlier one, as in Hydra's basic sweeper)."""
    dims: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_delete() and override.value() is None:
            dims[key] = [None]  # ~key: delete it
        elif override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ValueError(f"{override.input_line}: only lists of values (a,b,c) can be swept here")
            values = list(override.sweep_string_iterator())
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"{key} lists {twice[0]} more than once; list each value once")
            dims[key] = values
        else:
            dims[key] = [override.get_value_element_as_str()]
    return dims


def sweep_dimensions(lines: list[str]) -> dict[str, list[str]]:
    """dimensions() of override strings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return dimensions(OverridesParser.create().parse_overrides(lines))


# --- grids ---------------------------------------------------------------------------------------

def log_grid(low: float, high: float, per_decade: int = 2) -> list[float]:
    """1, 3 per decade (per_decade=2) or 1, 2, 5 (3) from low up to high, both ends included."""
    mantissas = {1: (1,), 2: (1, 3), 3: (1, 2, 5)}[per_decade]
    out = []
    for exponent in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1):
        for m in mantissas:
            v = m * 10.0 ** exponent
            if low * (1 - 1e-9) <= v <= high * (1 + 1e-9):
                out.append(v)
    return out or [low]


def scratch_grid_for(finetune_grid: list[float], corpus_chars: float, decades: float = 2.0,
                     per_decade: int = 2) -> list[float]:
    """A from-scratch grid from the smallest D_F to `decades` above the largest, as far as the
    target corpus allows (its training characters)."""
    top = min(max(finetune_grid) * 10 ** decades, corpus_chars)
    return log_grid(min(finetune_grid), top, per_decade)


def check_shared_tokenizer(cells: list[tuple[Cell, dict, str]]) -> None:
    """One tokenizer must serve every pair of a sweep: (cell, its tokenizer settings, its source)
    for every job. A BPE learned on each job's own source would differ between pairs."""
    target = [(c, tok, src) for c, tok, src in cells if c.regime in ("scratch", "finetune")]
    settings = {repr(sorted(tok.items())): c for c, tok, _ in target}
    if len(settings) > 1:
        a, b = list(settings.values())[:2]
        raise ValueError(f"sweep cells use different tokenizer settings ({' '.join(a.rest)} vs {' '.join(b.rest)}); "
                         "one tokenizer must serve every pair: set tokenizer.* once for the whole sweep")
    sources = {src for c, _, src in cells}
    if len(sources) > 1 and target:
        tok = target[0][1]
        if tok.get("kind") == "bpe" and not tok.get("train_on"):
            raise ValueError(f"{len(sources)} sources with tokenizer=bpe learned on each source: every pair would "
                             "have its own tokenizer; set tokenizer.train_on to a mix of every corpus (as "
                             "experiment=atlas does) or use tokenizer=byte")
