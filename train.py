"""Train one run, or a sweep with -m:  python train.py -m model.n_layer=2,4,8 data.finetune_chars=1e5,1e6"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # hub datasets are opt-in (data.*=..._hub), never a silent lookup
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from transfer_lab.errors import UserError, exit_with  # noqa: E402
from transfer_lab.study.launch_checks import check_experiment_override, check_sweep_cells  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> str:
    from transfer_lab.study.job import run_job  # heavy imports after Hydra has parsed the command line

    try:
        return run_job(cfg)
    except UserError as err:
        exit_with(err)


if __name__ == "__main__":
    check_experiment_override(sys.argv[1:])
    check_sweep_cells(sys.argv[1:])  # every cell of a multirun, before the first one trains
    main()
