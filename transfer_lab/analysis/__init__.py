"""Analysis stage: run records → tidy table → effective data → fitted laws → report.

Public entry points:
  collect_local(root, sweep)          runs on disk → Collection (tidy table + excluded rows)
  run_analysis(source, settings)     a Collection or table → AnalysisResult (data; report/ writes files)
  predict(result, n, finetune_chars)  D_T, multiplier, fraction and loss with intervals
"""

from transfer_lab.analysis.collect import (
           Collection,
           collect_local,
           latest_sweep,
           output_root,
           records_to_table,
)
from transfer_lab.analysis.fit.predict import predict
from transfer_lab.analysis.fit.result import ANCHORS, AnalysisResult
from transfer_lab.analysis.studies.sweep_analysis import run_analysis

__all__ = ["ANCHORS", "AnalysisResult", "Collection", "collect_local", "latest_sweep", "output_root",
           "predict", "records_to_table", "run_analysis"]
