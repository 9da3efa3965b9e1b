"""What a run costs on the machine a sweep ran on, fitted to that sweep's own finished runs.

  seconds per token   ln(s/token) = a + b·ln N   (every regime: the same model costs the same per token)
  tokens to converge  ln(tokens) = c + d·ln D + e·ln N, per regime (scratch, finetune): early stopping
                      decides how long a run trains, so it is measured, not assumed
  a pre-training      costs its budget of tokens

Used by the priced plan (analysis) and by a launch's ETA (the sweeper prices the jobs still to run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from transfer_lab.errors import ResultsError

if TYPE_CHECKING:  # a launch prices jobs without importing pandas; the table comes from the caller
    import pandas as pd


def non_embedding_params(n_layer: int, n_embd: int) -> float:
    """N of a GPT-2 shape: per layer 12·d² weights + 13·d biases and norms, plus the final norm."""
    return float(n_layer * (12 * n_embd ** 2 + 13 * n_embd) + 2 * n_embd)


@dataclass
class CostModel:
    """ln(seconds/token) = a + b·ln N; ln(tokens) = c + d·ln D + e·ln N per regime (scratch, finetune)."""

    per_token: tuple[float, float]
    tokens: dict[str, tuple[float, float, float]]
    runs: int
    rms_log: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, table: pd.DataFrame) -> "CostModel":
        done = table[(table["status"] == "done") & (table["wall_time_s"] > 0) & (table["tokens_seen"] > 0)]
        if len(done) < 3 or done["N"].nunique() < 2:
            raise ResultsError("the cost model needs finished runs at ≥ 2 model sizes (wall time and tokens "
                               "recorded); train some first")
        x = np.log(done["N"].to_numpy(float))
        y = np.log(done["wall_time_s"].to_numpy(float) / done["tokens_seen"].to_numpy(float))
        coef, rms = _lstsq(np.column_stack([np.ones_like(x), x]), y)
        model = cls(per_token=tuple(coef), tokens={}, runs=len(done), rms_log={"seconds_per_token": rms})
        for regime in ("scratch", "finetune"):
            rows = done[done["regime"] == regime]
            if len(rows) < 4:
                continue
            a = np.column_stack([np.ones(len(rows)), np.log(rows["D_F"].to_numpy(float)), np.log(rows["N"].to_numpy(float))])
            coef, rms = _lstsq(a, np.log(rows["tokens_seen"].to_numpy(float)))
            model.tokens[regime], model.rms_log[f"{regime}_tokens"] = tuple(coef), rms
        return model

    def seconds(self, regime: str, n: float, d: float | None = None, pretrain_tokens: float | None = None) -> float:
        per_token = np.exp(self.per_token[0] + self.per_token[1] * np.log(n))
        if regime == "pretrain":
            return float(per_token * pretrain_tokens)
        c, dd, e = self.tokens.get(regime) or self.tokens.get("scratch") or (np.log(1e6), 0.0, 0.0)
        return float(per_token * np.exp(c + dd * np.log(d) + e * np.log(n)))


def _lstsq(a: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    coef = np.linalg.lstsq(a, y, rcond=None)[0]
    return coef, float(np.sqrt(np.mean((a @ coef - y) ** 2)))
