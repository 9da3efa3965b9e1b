"""Hydra's basic sweeper, with the study protocol's cells in place of a plain Cartesian product.

`python train.py -m model.n_layer=2,4,8 data.finetune_chars=1e5,1e6` then runs, per size, one
pre-training, the fine-tunes at each D_F and the from-scratch runs at each D of the experiment's
data.scratch_chars grid (transfer_lab/study/protocol.py). Selected by conf/hydra/default.yaml; Hydra
instantiates plugins only from the hydra_plugins namespace package, hence this folder.
"""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.errors import HydraException

from transfer_lab.study import protocol


class StudySweeper(BasicSweeper):
    _command_line: list[str] = []

    def sweep(self, arguments):
        self._command_line = list(arguments)
        return super().sweep(arguments)

    def _parse_config(self):  # the experiment's params, before BasicSweeper.sweep adds the command line
        return protocol.experiment_params(dict(self.params), self._command_line)

    def split_arguments(self, overrides, max_batch_size):  # called by BasicSweeper.sweep
        try:
            jobs = [cell.overrides for cell in protocol.expand(protocol.dimensions(overrides))]
        except ValueError as err:
            raise HydraException(str(err)) from None
        if max_batch_size is None:
            return [jobs]
        return [jobs[i:i + max_batch_size] for i in range(0, len(jobs), max_batch_size)]
