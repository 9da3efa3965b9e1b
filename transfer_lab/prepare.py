"""Prepare a study's data ahead of training: corpora, tokenizer, token files (and print their sizes).

    python -m transfer_lab.prepare experiment=demo     # what `make data` runs

It composes the same config as train.py, so it prepares exactly what those runs will read.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from transfer_lab.errors import UserError, exit_with  # noqa: E402


def describe(name: str, token_file) -> str:
    meta, train, val = token_file.meta, token_file.train, token_file.val
    return (f"{name}: {train.n_chars:,} train / {val.n_chars:,} val chars -> {len(train):,} / {len(val):,} tokens "
            f"({train.n_chars / len(train):.2f} chars/token); tokenised at {meta['mb_per_s']:.2f} MB/s "
            f"({meta['seconds']:.1f} s) [{token_file.directory}]")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from transfer_lab.data.run_data import load_corpus_tokens, load_run_data
    from transfer_lab.study.job_settings import read_settings
    from transfer_lab.study.validate import validate_config

    try:
        validate_config(cfg)
        spec = read_settings(cfg).data
        data = load_run_data(spec, need_source=True, need_target=cfg.regime != "pretrain")
        others = [name for name in swept_corpora() if name not in data.sources and name != spec.target]
        extra = {name: load_corpus_tokens(spec, name, data.tokenizer) for name in others}
    except UserError as err:
        exit_with(err)
    print(f"tokenizer {data.tokenizer.id} (vocabulary {data.tokenizer.vocab_size:,})")
    for name, (token_file, weight) in data.sources.items():
        print(f"source {describe(name, token_file)} weight {weight:g}")
    if data.target is not None:
        print(f"target {describe(spec.target, data.target)}")
    for name, token_file in extra.items():
        print(f"swept {describe(name, token_file)}")


def swept_corpora() -> list[str]:
    """Corpora a multirun of this experiment sweeps over (data.source / data.target, e.g. an atlas)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = HydraConfig.get().sweeper.get("params") or {}
    names = []
    for key in ("data.source", "data.target"):
        value = params.get(key)
        if isinstance(value, str):  # a, b, {a: 0.5, c: 0.5}: the corpora of every value, mixtures included
            override = OverridesParser.create().parse_override(f"{key}={value}")
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
            names += [str(n) for v in values for n in (v if isinstance(v, dict) else [v])]
    return list(dict.fromkeys(names))


if __name__ == "__main__":
    import sys

    from transfer_lab.study.launch_checks import check_experiment_override

    check_experiment_override(sys.argv[1:])  # unknown keys, bad choices, an unwritable output root: one line
    main()
