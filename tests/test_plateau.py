"""The plateau rule's window, counted on a scripted loss curve (no training): callbacks.PlateauSchedule."""

from types import SimpleNamespace

import pytest
import torch
from omegaconf import open_dict
from pytorch_lightning.trainer.states import TrainerFn

from transfer_lab.study.job_settings import identity_of
from transfer_lab.study.keys import run_key, run_lineage
from transfer_lab.training.callbacks import PlateauSchedule


class _Module:
    lr_scale, device = 1.0, "cpu"

    def load_state_dict(self, state):
        self.restored = True


def _drive(rule: PlateauSchedule, losses: dict[int, float], tmp_path, module=None) -> list[tuple[int, str]]:
    """Feed validations at the given steps; return (step, event) for each anneal and the stop."""
    best = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}}, best)
    group = {"lr": 1.0}
    trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn=TrainerFn.FITTING), should_stop=False,
                              checkpoint_callback=SimpleNamespace(best_model_path=str(best)),
                              optimizers=[SimpleNamespace(param_groups=[group])], callback_metrics={})
    module, events = module or _Module(), []
    for step, loss in sorted(losses.items()):
        trainer.global_step, trainer.callback_metrics["val/loss"] = step, torch.tensor(loss)
        decays = rule.decays
        rule.on_validation_end(trainer, module)
        if rule.decays > decays:
            events.append((step, "anneal"))
        if trainer.should_stop:
            events.append((step, "stop"))
            break
    return events


def _rule(anneal_window: str) -> PlateauSchedule:
    return PlateauSchedule(patience=2, patience_fraction=0.25, min_rel_improvement=0.002, decay=0.1,
                           min_lr_ratio=0.1, min_steps=0, anneal_window=anneal_window)


def _curve() -> dict[int, float]:
    """Improves until step 100, then flat: every plateau is a pure wait."""
    return {s: (3.0 - s / 100 if s <= 100 else 2.0) for s in range(10, 400, 10)}


def test_run_window_waits_a_quarter_of_the_whole_run_in_every_phase(tmp_path):
    # peak: no gain since 100, and 140 - 100 >= 0.25 × 140; annealed: 190 - 140 >= 0.25 × 190
    assert _drive(_rule("run"), _curve(), tmp_path) == [(140, "anneal"), (190, "stop")]


def test_phase_window_counts_an_annealed_phase_from_its_anneal(tmp_path):
    # the peak phase is the same; after the anneal at 140 the window spans 25% of the phase's own
    # steps, so a phase that never improves ends after `patience` validations
    assert _drive(_rule("phase"), _curve(), tmp_path) == [(140, "anneal"), (160, "stop")]


def test_phase_window_still_follows_an_annealed_phase_that_improves(tmp_path):
    curve = _curve()
    curve.update({s: 2.0 - (s - 140) / 1000 for s in range(150, 260, 10)})  # gains 0.5% per validation to 250
    # last gain at 250; stop once 2 validations and 25% of the phase (250 - 140 → ≥ 37 steps) pass
    assert _drive(_rule("phase"), curve, tmp_path) == [(140, "anneal"), (290, "stop")]


def test_the_window_survives_a_resume(tmp_path):
    rule, module = _rule("phase"), _Module()  # the module's lr_scale is in its own checkpoint
    _drive(rule, {s: v for s, v in _curve().items() if s <= 140}, tmp_path, module)
    resumed = _rule("phase")
    resumed.load_state_dict(rule.state_dict())
    assert resumed.phase_start == 140
    assert _drive(resumed, {s: v for s, v in _curve().items() if s > 140}, tmp_path, module) == [(160, "stop")]
    old = {k: v for k, v in rule.state_dict().items() if k != "phase_start"}  # a checkpoint from before the setting
    before = _rule("phase")
    before.load_state_dict(old)
    assert before.phase_start == 0


def test_the_default_window_keeps_the_keys_of_runs_recorded_before_it_existed(compose_cfg):
    cfg = compose_cfg("regime=scratch")
    key, lineage = run_key(identity_of(cfg)), run_lineage(identity_of(cfg))
    with open_dict(cfg):
        del cfg.optim["anneal_window"]
    assert (run_key(identity_of(cfg)), run_lineage(identity_of(cfg))) == (key, lineage)
    with open_dict(cfg):
        cfg.optim.anneal_window = "phase"
    assert run_key(identity_of(cfg)) != key and run_lineage(identity_of(cfg)) != lineage


@pytest.mark.parametrize("bad", ["epoch", "Phase"])
def test_an_unknown_anneal_window_is_a_one_line_error(compose_cfg, bad):
    from transfer_lab.study.validate import ConfigError, validate_config

    with pytest.raises(ConfigError, match="optim.anneal_window=.* use one of run, phase"):
        validate_config(compose_cfg(f"optim.anneal_window={bad}"))
