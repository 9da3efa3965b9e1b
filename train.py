"""Train one run, or a sweep with -m:  python train.py -m model.n_layer=2,4,8 data.finetune_chars=1e5,1e6"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # hub datasets are opt-in (data.*=..._hub), never a silent lookup
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("TRANSFER_LAB_LAUNCH", str(os.getpid()))  # this launch's Hydra folder (its workers inherit it)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from transfer_lab.errors import UserError, exit_with  # noqa: E402
from transfer_lab.study import interrupts  # noqa: E402
from transfer_lab.study.launch_checks import check_experiment_override, check_sweep_cells  # noqa: E402
from transfer_lab.study.outcomes import FAILED, INTERRUPTED, NO_SPACE  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> str:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from transfer_lab.study.job import run_job  # heavy imports after Hydra has parsed the command line

    try:
        outcome = run_job(cfg)
    except UserError as err:
        exit_with(err)
    if HydraConfig.get().mode == RunMode.RUN:  # a multirun's sweeper sums up and exits for its jobs
        if outcome == INTERRUPTED:
            sys.exit(interrupts.exit_status())
        if outcome in (NO_SPACE, FAILED):  # the job has said why, in one line and in its record
            sys.exit(1)
    return outcome


if __name__ == "__main__":
    check_experiment_override(sys.argv[1:])
    check_sweep_cells(sys.argv[1:])  # every cell of a multirun, before the first one trains
    interrupts.install_handlers(launcher=True)  # SIGTERM / SIGINT: runs stop at a step boundary, workers' too
    main()
