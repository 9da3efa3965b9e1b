"""The LightningModule: a GPT-2 trained with AdamW, warm-up + cosine, validated in nats/char."""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from transfer_lab.datamodule import IGNORE_INDEX
from transfer_lab.model import ModelShape, build_gpt2


hf_logging.disable_progress_bar()  # "Loading weights" bars would interleave with the sweep's log


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine down to `min_ratio` (10% of peak, as Kim 2021) at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class CausalLM(pl.LightningModule):
    """Hyperparameters are plain numbers so checkpoints load with torch.load(weights_only=True)."""

    def __init__(self, shape: dict, lr: float, weight_decay: float, betas: tuple[float, float],
                 warmup_steps: int, total_steps: int, min_lr_ratio: float, val_chars: int,
                 init_from: str | None = None, compile: bool = False, attn_implementation: str = "sdpa"):
        super().__init__()
        self.save_hyperparameters()
        if init_from:  # a pre-trained model saved as safetensors by the pre-training cache
            self.model = GPT2LMHeadModel.from_pretrained(Path(init_from), attn_implementation=attn_implementation)
            self.model.train()  # from_pretrained returns eval mode; Lightning does not switch it back
        else:
            self.model = build_gpt2(ModelShape(**shape), attn_implementation)
        self.forward_fn = torch.compile(self.model) if compile else self.model
        self._val_sum = self._val_count = None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.forward_fn(input_ids=input_ids).logits

    def _nll(self, batch, reduction: str) -> torch.Tensor:
        inputs, targets = batch
        logits = self(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                               reduction=reduction)

    def training_step(self, batch, batch_idx):
        loss = self._nll(batch, "mean")
        # for the progress bar only (RunRecorder writes the curves); self.log costs ~1.5 ms a step,
        # 3-4% of a CPU demo step, so it is skipped when no bar is shown (bench figure 1)
        if self._trainer is not None and self._trainer.progress_bar_callback is not None:
            self.log("train/loss", loss, on_step=True, prog_bar=True, logger=False)
        return loss

    def on_validation_epoch_start(self):
        self._val_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self._val_count = torch.zeros((), device=self.device, dtype=torch.float64)

    def validation_step(self, batch, batch_idx):
        self._val_sum += self._nll(batch, "sum").double()
        self._val_count += (batch[1] != IGNORE_INDEX).sum()

    def on_validation_epoch_end(self):
        loss = self._val_sum / self._val_count
        self.log("val/loss", loss.float(), prog_bar=True, logger=False)  # monitored by early stopping
        self.log("val/loss_per_char", (self._val_sum / self.hparams.val_chars).float(), logger=False)

    def configure_optimizers(self):
        hp = self.hparams
        # weight decay on matrices only; biases, layer norms (1-D) are left alone
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), fused=self.device.type == "cuda")
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, hp.warmup_steps, hp.total_steps, hp.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
