"""Analyse a sweep: fit the transfer laws and write outputs/sweeps/<sweep>/report/report.md.

  python analyze.py                          # the latest sweep (make fit)
  python analyze.py sweep=demo               # a named sweep
  python analyze.py action=predict predict.n=1e6 predict.finetune_chars=1e6
  python analyze.py source=wandb wandb.entity=ME wandb.project=transfer_lab wandb.group=demo
  python analyze.py source=wandb_offline wandb.offline_dir=path/to/wandb
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from transfer_lab import errors  # noqa: E402
from transfer_lab.study.launch_checks import check_overrides  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    try:
        from transfer_lab.analysis.actions import run_cli
        run_cli(cfg)
    except errors.UserError as err:
        errors.exit_with(err)


if __name__ == "__main__":
    check_overrides(sys.argv[1:], "analyze")
    main()
