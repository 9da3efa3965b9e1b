"""Every shipped experiment composes and passes validation; the default is the demo grid."""

import pytest
from omegaconf import OmegaConf

from transfer_lab.cli import available
from transfer_lab.corpora import available_corpora
from transfer_lab.validate import validate_config


@pytest.mark.parametrize("experiment", available("experiment"))
def test_experiment_composes_and_validates(compose_cfg, experiment):
    cfg = compose_cfg(f"experiment={experiment}", tiny=False)
    validate_config(cfg)
    assert cfg.sweep == experiment
    corpora = set(available_corpora())
    source = cfg.data.source
    names = list(source.keys()) if OmegaConf.is_dict(source) else [source]
    assert set(names) | {cfg.data.target} <= corpora


def test_default_experiment_is_the_demo_grid(compose_cfg):
    cfg = compose_cfg(tiny=False)
    assert cfg.sweep == "demo" and cfg.data.source == "english" and cfg.data.target == "python"


def test_gpu_experiments_use_gpt2_bpe_and_long_context(compose_cfg):
    cfg = compose_cfg("experiment=en2de", tiny=False)
    assert cfg.tokenizer.kind == "gpt2" and cfg.model.n_ctx == 1024 and cfg.data.target == "german"
    assert OmegaConf.to_container(compose_cfg("experiment=textcode2python", tiny=False).data.source) == {
        "english": 0.5, "code_nonpython": 0.5}
