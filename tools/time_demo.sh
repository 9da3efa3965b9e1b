#!/usr/bin/env bash
# `make demo` from a bare clone, timed phase by phase, and docs/results/demo regenerated from it:
#   tools/time_demo.sh [CLONE_DIR]      (default: a fresh temporary folder; the repository is this checkout)
# Writes, in this checkout: docs/results/demo/{report.md,table.csv,fits.json,plots/} (the committed
# report of those runs), timing.json (each phase's wall seconds, the machine's load) and
# first_screen.png (the HTML report's first screen in headless Chromium, 1280 × 1600).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
clone="${1:-$(mktemp -d)/transfer_lab}"
out="$repo/docs/results/demo"
git clone -q "$repo" "$clone"
cd "$clone"
stamp() { date +%s.%N; }
t0=$(stamp); make setup >/dev/null;                    t1=$(stamp)
make data >/dev/null;                                  t2=$(stamp)
.venv/bin/python train.py -m experiment=demo | tee sweep.log | grep -E '^\[[0-9]+/[0-9]+\]|^sweep '; t3=$(stamp)
.venv/bin/python analyze.py sweep=demo >/dev/null;     t4=$(stamp)
load=$(cut -d' ' -f1-3 /proc/loadavg)
# the committed copy, made from this checkout so that its report names the relative command
(cd "$repo" && TRANSFER_LAB_OUTPUTS="$clone/outputs" "$clone/.venv/bin/python" analyze.py sweep=demo \
    paths.report_dir=docs/results/demo html=false pdf=false >/dev/null)
.venv/bin/python -m transfer_lab.analysis.report.browser outputs/sweeps/demo/report/report.html \
    --screenshot "$out/first_screen.png"
python3 - "$out/timing.json" "$t0" "$t1" "$t2" "$t3" "$t4" "$load" "$(git rev-parse HEAD)" "$(nproc)" <<'PY'
import json, sys
path, t0, t1, t2, t3, t4, load, commit, cores = sys.argv[1], *map(float, sys.argv[2:7]), *sys.argv[7:10]
phases = {"setup_s": t1 - t0, "data_s": t2 - t1, "sweep_s": t3 - t2, "analysis_s": t4 - t3}
json.dump({"commit": commit, "total_s": t4 - t0, **phases, "total_min": (t4 - t0) / 60, "sweep_min": (t3 - t2) / 60,
           "load_average_after": load, "cores": int(cores)}, open(path, "w"), indent=1)
print(f"make demo from a bare clone: {(t4 - t0) / 60:.1f} min ({(t3 - t2) / 60:.1f} min of sweep) → {path}")
PY
