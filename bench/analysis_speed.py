"""Figure 6: the analysis of a 100-run sweep with 1000 bootstrap resamples.

The runs are the synthetic sweep of tests/analysis_synth.py (real results.json files generated
from known laws, 2% multiplicative noise): 5 sizes × (8 from-scratch + 12 fine-tuned budgets) =
100 runs. Timed: `run_analysis(sweep_dir, n_bootstrap=...)` from reading the records to the
fitted laws and effective-data table (no plots, no report files).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import BENCH_DATA, ROOT


def analysis(n_bootstrap: int = 1000, repeats: int = 1) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import analysis_synth

    from transfer_lab.analysis import run_analysis

    tmp = Path(tempfile.mkdtemp(prefix="fig6-", dir=BENCH_DATA))
    try:
        runs = analysis_synth.make_runs("bench100", noise=0.02, extras=False)
        sweep_dir = analysis_synth.write_runs(tmp, "bench100", runs)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = run_analysis(sweep_dir, n_bootstrap=n_bootstrap)
            times.append(time.perf_counter() - started)
        fits = sorted(result.fits)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"runs": len(runs), "n_bootstrap": n_bootstrap, "seconds": min(times), "all_s": times, "fits": fits}
