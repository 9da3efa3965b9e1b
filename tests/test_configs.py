"""Every shipped experiment composes and passes validation; the default is the demo grid."""

import pytest
from omegaconf import OmegaConf

from transfer_lab.data.corpora import available_corpora
from transfer_lab.study.launch_checks import available
from transfer_lab.study.validate import validate_config

# experiments that add runs to another's study (one sweep, one analysis): the mix study's simplex and
# its held-out runs
JOINS = {"mix_simplex_python": "mix_text_code_python", "mix_verify": "mix_text_code_python"}
BASES = {"cpu_base"}  # settings the CPU studies start from: not a study of their own
STUDIES = [e for e in available("experiment") if e not in BASES]


@pytest.mark.parametrize("experiment", STUDIES)
def test_experiment_composes_and_validates(compose_cfg, experiment):
    cfg = compose_cfg(f"experiment={experiment}")  # at its own size
    validate_config(cfg)
    assert cfg.sweep == JOINS.get(experiment, experiment)
    corpora = set(available_corpora())
    source = cfg.data.source
    names = list(source.keys()) if OmegaConf.is_dict(source) else [source]
    assert set(names) | {cfg.data.target} <= corpora


def test_default_experiment_is_the_demo_grid(compose_cfg):
    cfg = compose_cfg(test_size=False)
    assert cfg.sweep == "demo" and cfg.data.source == "english" and cfg.data.target == "python"


def test_gpu_experiments_use_gpt2_bpe_and_long_context(compose_cfg):
    cfg = compose_cfg("experiment=en2de")
    assert cfg.tokenizer.kind == "gpt2" and cfg.model.n_ctx == 1024 and cfg.data.target == "german"
    assert OmegaConf.to_container(compose_cfg("experiment=textcode2python").data.source) == {
        "english": 0.5, "code_nonpython": 0.5}


@pytest.mark.parametrize("experiment", STUDIES)
def test_every_experiment_runs_scratch_a_decade_past_its_largest_fine_tune(experiment):
    """D_E is ~10-1000× D_F: a from-scratch grid that stops at the largest D_F cannot be inverted."""
    from conftest import compose

    from transfer_lab.study import protocol

    params = OmegaConf.to_container(compose(f"experiment={experiment}", hydra=True).hydra.sweeper.params)
    dims = protocol.sweep_dimensions([f"{k}={v}" for k, v in params.items()])
    finetune = [float(v) for v in dims[protocol.FINETUNE_GRID]]
    scratch = [float(v) for v in dims[protocol.SCRATCH_GRID]]
    # the atlas's 2-core budget stops its scratch grid at 3× its largest D_F (conf/experiment/atlas.yaml):
    # fine-tuned losses below its 3e5 point get a model-based D_E, flagged in the report; the mix study
    # is the atlas's grid, so that it reuses the atlas's runs; the demo's stops at 6× (conf/experiment/demo.yaml),
    # past the largest D_E the budget study measured at the demo's pre-training budget
    reach = 3 if experiment == "atlas" or experiment.startswith("mix_") else 6 if experiment == "demo" else 10
    assert max(scratch) >= reach * max(finetune) * 0.999, (experiment, max(scratch), max(finetune))
    assert min(scratch) <= min(finetune)  # and down to the smallest D_F: small D_E are interpolated too


def test_the_benchmarks_fixed_step_schedule_builds_from_the_real_config(compose_cfg, monkeypatch):
    """make bench times fit() on a fixed number of steps: its Schedule must track schedule.py's."""
    import sys

    from conftest import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("train_speed", None)
    import train_speed

    schedule = train_speed.steps_schedule(compose_cfg(), 40)
    assert schedule.max_steps == 40 and schedule.horizon_steps == 40 and schedule.fixed_budget
