"""Predictions from fitted laws: D_T, multiplier, fraction and loss at a given N and D_F."""

from __future__ import annotations

from transfer_lab.analysis.fit import laws
from transfer_lab.analysis.fit.intervals import interval
from transfer_lab.errors import ConfigError, ResultsError


def predict(result, n: float, finetune_chars: float, law: str = "transfer") -> dict:
    """Predicted D_T, multiplier, fraction (transfer law, or the unified law's k, α, β) and the
    fine-tuned loss (unified law, else Kaplan at D_F + D_T), each with its bootstrap interval."""
    if not (n and n > 0 and finetune_chars and finetune_chars > 0):
        raise ConfigError("predict needs predict.n > 0 and predict.finetune_chars > 0 "
                          "(e.g. predict.n=1e6 predict.finetune_chars=1e6)")
    if law not in ("transfer", "unified"):
        raise ConfigError(f"predict.law={law!r} unknown; use transfer or unified")
    ci = result.settings.get("ci", 0.95)
    fit = result.fit(law)
    if fit is None:
        reason = result.fits[law].message if law in result.fits else "no fine-tuned runs"
        raise ResultsError(f"the {law} law was not fitted for sweep {result.sweep} ({reason}); "
                           f"add runs or use predict.law=transfer|unified")
    off = 0 if law == "transfer" else 4
    theta = fit.theta[None, :]
    boot = fit.boot_theta if fit.boot_theta is not None and len(fit.boot_theta) else theta

    def dt_of(th):
        return laws.transfer_dt(finetune_chars, n, 10 ** th[:, off], th[:, off + 1], th[:, off + 2])

    out = {"law": law, "N": float(n), "D_F": float(finetune_chars), "ci": ci}
    d_t, d_tb = float(dt_of(theta)[0]), dt_of(boot)
    out["D_T"], out["D_T_ci"] = d_t, interval(d_tb, ci)
    out["multiplier"] = float(laws.effective_multiplier(finetune_chars, d_t))
    out["multiplier_ci"] = interval(laws.effective_multiplier(finetune_chars, d_tb), ci)
    out["fraction"] = float(laws.transfer_fraction(finetune_chars, d_t))
    out["fraction_ci"] = interval(laws.transfer_fraction(finetune_chars, d_tb), ci)
    loss_fit = fit if law == "unified" else result.fit("kaplan")
    if loss_fit is not None:
        def loss_of(th_loss, d_eff):
            return laws.kaplan_loss(n, d_eff, 10 ** th_loss[:, 0], 10 ** th_loss[:, 1], th_loss[:, 2], th_loss[:, 3])
        lb = loss_fit.boot_theta if loss_fit.boot_theta is not None and len(loss_fit.boot_theta) else loss_fit.theta[None]
        m = min(len(lb), len(d_tb))
        out["loss"] = float(loss_of(loss_fit.theta[None], finetune_chars + d_t)[0])
        out["loss_ci"] = interval(loss_of(lb[:m], finetune_chars + d_tb[:m]), ci)
        out["loss_scratch"] = float(loss_of(loss_fit.theta[None], finetune_chars)[0])
        out["loss_from"] = "unified law" if law == "unified" else "Kaplan from-scratch fit at D_F + D_T"
    else:
        out["loss_note"] = "no Kaplan/unified fit: loss not predicted"
    tr = result.trade
    if tr:
        out["trade"] = tr
    return out
