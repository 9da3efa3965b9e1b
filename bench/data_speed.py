"""Figure 3: tokenisation MB/s when preparing a corpus, and the training data loader's tokens/s alone.

Tokenisation: the prepared corpora are tokenised again into a fresh temporary cache folder by the
project's own `tokens.load_token_file` (batched `encode_batch` on the fast tokenizer; Rust threads on
all cores when TOKENIZERS_PARALLELISM is true, as train.py sets it); MB/s is what load_token_file
records in meta.json (UTF-8 bytes of both splits over the seconds it took), pooled over corpora.

Loader: the real `TokenDataModule.train_dataloader()` (DataLoader(batch_size=None) over PackedBlocks)
for the demo run's batch shape, iterated alone for many steps; its tokens/s is compared with the
training tokens/s of the same model/batch shape from figure 1 (the fastest demo size: worst case).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import BENCH_DATA, compose, median, run_data


def tokenisation(corpora: list[str], tokenizer_overrides: list[str], log=print) -> dict:
    from omegaconf import OmegaConf

    from transfer_lab.data.run_data import _prepared
    from transfer_lab.data.tokenizers import load_tokenizer

    cfg = compose("regime=scratch", *tokenizer_overrides)
    handle = run_data(cfg).tokenizer if cfg.tokenizer.kind == "bpe" else load_tokenizer(
        OmegaConf.to_container(cfg.tokenizer, resolve=True), Path(cfg.paths.cache_dir))
    from transfer_lab.data.token_files import load_token_file

    tmp = Path(tempfile.mkdtemp(prefix="fig3-", dir=BENCH_DATA))
    rows, total_mb, total_s = [], 0.0, 0.0
    try:
        for name in corpora:
            corpus = _prepared(name, str(cfg.paths.data_dir))
            started = time.perf_counter()
            tf = load_token_file(corpus, handle, tmp, log=lambda *a: None)
            wall = time.perf_counter() - started
            mb = sum(s["bytes"] for s in tf.meta["splits"].values()) / 1e6
            tokens = sum(s["tokens"] for s in tf.meta["splits"].values())
            rows.append({"corpus": name, "tokenizer": handle.id, "mb": round(mb, 3), "tokens": tokens,
                         "seconds": tf.meta["seconds"], "mb_per_s": tf.meta["mb_per_s"], "wall_s": round(wall, 3)})
            total_mb += mb
            total_s += tf.meta["seconds"]
            log(f"    tokenised {name} with {handle.id}: {mb:.2f} MB in {tf.meta['seconds']:.2f} s "
                f"= {tf.meta['mb_per_s']:.2f} MB/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"tokenizer": handle.id, "corpora": rows, "mb_per_s": total_mb / max(total_s, 1e-9)}


def loader(overrides: list[str], steps: int, repeats: int = 3) -> dict:
    from transfer_lab.study.job_settings import read_settings
    from transfer_lab.study.training_run import datamodule_for

    cfg = compose("regime=scratch", "data.finetune_chars=5e5", *overrides)
    settings = read_settings(cfg)
    data = run_data(cfg)
    o = cfg.optim
    rates, raw_rates = [], []
    for _ in range(repeats):
        dm = datamodule_for(settings, [(data.target.train, 1.0)], data.target.val, int(float(cfg.data.finetune_chars)),
                            o.batch_size)
        it = iter(dm.train_dataloader())
        next(it)
        started = time.perf_counter()
        for _ in range(steps):
            next(it)
        rates.append(steps * o.batch_size * cfg.model.n_ctx / (time.perf_counter() - started))
        blocks = dm.train_data
        started = time.perf_counter()
        for step in range(steps):
            blocks.batch_at(step)
        raw_rates.append(steps * o.batch_size * cfg.model.n_ctx / (time.perf_counter() - started))
    return {"steps": steps, "batch_size": int(o.batch_size), "n_ctx": int(cfg.model.n_ctx),
            "loader_tokens_per_s": median(rates), "batch_at_tokens_per_s": median(raw_rates)}
