"""Analyse a sweep: fit the transfer laws and write outputs/sweeps/<sweep>/report/report.md.

  python analyze.py                          # the latest sweep (make fit)
  python analyze.py sweep=demo               # a named sweep
  python analyze.py action=predict predict.n=1e6 predict.finetune_chars=1e6
  python analyze.py source=wandb wandb.entity=ME wandb.project=transfer_lab wandb.group=demo
  python analyze.py source=wandb_offline wandb.offline_dir=path/to/wandb
"""

from __future__ import annotations

import os
import signal
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
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: a report set is staged and moved into place whole
        print("interrupted: the report folder holds the last complete report set (each is written whole, or not at "
              "all); run the same command again", file=sys.stderr)
        sys.exit(128 + _STOPPED_BY[0])


_STOPPED_BY = [signal.SIGINT]


def _stop(signum, frame):
    _STOPPED_BY[0] = signum
    raise KeyboardInterrupt  # SIGTERM ends the analysis as Ctrl-C does: staging cleaned up, one line


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    check_overrides(sys.argv[1:], "analyze")
    main()
