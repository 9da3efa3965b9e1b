"""The LightningModule: a GPT-2 trained with AdamW, warm-up + cosine (schedule.py), validated in nats/token."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from transfer_lab.data.datamodule import IGNORE_INDEX
from transfer_lab.training.model import ModelShape, build_gpt2
from transfer_lab.training.schedule import lr_factor

STALE_WRAPPER_PREFIX = "forward_fn."  # where torch.compile's wrapper put its copy of the weights before
hf_logging.disable_progress_bar()  # "Loading weights" bars would interleave with the sweep's log


class CausalLM(pl.LightningModule):
    """Hyperparameters are plain numbers so checkpoints load with torch.load(weights_only=True).

    With compile=True the model is compiled in place (nn.Module.compile): its state dict, and so every
    checkpoint, holds each weight once under the model's own names, whether compiled or not, so a run
    resumes across compile=true/false both ways and pre-trained weights load into a compiled model.
    """

    compile_options: dict = {}  # torch.compile's arguments (inductor by default; tests use the eager backend)

    def __init__(self, shape: dict, lr: float, weight_decay: float, betas: tuple[float, float],
                 warmup_steps: int, horizon_steps: int | None, min_lr_ratio: float,
                 init_from: str | None = None, compile: bool = False, attn_implementation: str = "sdpa"):
        super().__init__()
        self.save_hyperparameters()
        if init_from:  # a pre-trained model saved as safetensors by the pre-training cache
            self.model = GPT2LMHeadModel.from_pretrained(Path(init_from), attn_implementation=attn_implementation)
            self.model.train()  # from_pretrained returns eval mode; Lightning does not switch it back
        else:
            self.model = build_gpt2(ModelShape(**shape), attn_implementation)
        if compile:  # in place: the compiled wrapper is not a submodule, so state dicts keep the model's names
            self.model.compile(**self.compile_options)
        self._val_sum = self._val_count = None
        self.lr_scale = 1.0  # lowered by the plateau rule (callbacks.PlateauSchedule); kept in checkpoints

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits

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
        # nats/token over every target of the set; the caller knows the set's characters
        self.log("val/loss", (self._val_sum / self._val_count).float(), prog_bar=True, logger=False)

    def configure_optimizers(self):
        hp = self.hparams
        # weight decay on matrices only; biases, layer norms (1-D) are left alone
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), fused=self.device.type == "cuda")
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, hp.warmup_steps, hp.horizon_steps, hp.min_lr_ratio) * self.lr_scale)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # checkpoints written before compiling in place also hold every weight a second time under
        # the compiled wrapper's names (forward_fn._orig_mod.*): the copy of model.* is dropped
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(STALE_WRAPPER_PREFIX)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["lr_scale"] = self.lr_scale

    def on_load_checkpoint(self, checkpoint):
        self.lr_scale = float(checkpoint.get("lr_scale", 1.0))
