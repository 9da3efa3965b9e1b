"""make gpu-check: what a GPU does with this project, measured in one run of at most 10 minutes.

    make gpu-check                            # one GPU: writes docs/results/gpu/ (report.md, gpu_check.json)
    make gpu-check ARGS=--dry-run             # CPU, tiny shapes: the same script, under outputs/gpu-check-dry-run
    make gpu-check ARGS='--peak-tflops 989'   # a device the data-sheet table (bench/bench.yaml) does not name

Three parts (bench/gpu_parts.py; shapes and sizes in bench/bench.yaml: gpu_check):
  1. MFU of gpt2_85m (GPT-2 small's shape, context 1024, GPT-2 BPE) with bf16-mixed and torch.compile,
     through the project's own training path, against the device's data-sheet peak and a matmul
     measured on it;
  2. k tiny runs packed on one GPU (hydra/launcher=per_device jobs_per_device=k) against one at a time;
  3. a 3-size text -> Python grid (conf/experiment/gpu_check.yaml), packed on the GPU, and its analysis.

The dry run is what tests/test_gpu_check.py runs: on CPU nothing here measures a GPU, so its report
says so and it never writes docs/results/gpu/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, git_commit, machine_info, outputs_root, quiet_lightning  # noqa: E402

NOT_MEASURED = "not measured"


def parse_args(argv=None):
    from omegaconf import OmegaConf

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: checks the script, measures no GPU")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (default: bench.yaml)")
    p.add_argument("--out", default=None, help="report folder (default: docs/results/gpu, or "
                                               "<outputs>/gpu-check-dry-run/report with --dry-run)")
    p.add_argument("--only", default="mfu,packing,grid", help="comma-separated parts")
    args = p.parse_args(argv)
    args.cfg = OmegaConf.load(Path(__file__).with_name("bench.yaml")).gpu_check
    args.mode = "dry_run" if args.dry_run else "full"
    args.parts = [part for part in args.only.split(",") if part]
    work = outputs_root() / ("gpu-check-dry-run" if args.dry_run else "gpu-check")
    args.work, args.data_dir = work, outputs_root() / "data"
    args.out = Path(args.out) if args.out else (work / "report" if args.dry_run else ROOT / "docs" / "results" / "gpu")
    return args


def run_parts(args, log) -> dict:
    """Each part in turn, timed; a part that raises is recorded with its error and the others still run."""
    import torch

    import gpu_parts

    settings = args.cfg[args.mode]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (dry run)"
    peak = args.peak_tflops or (None if args.dry_run else gpu_parts.spec_peak(device, args.cfg.peaks_tflops))
    # one device: the GPU in full mode, one faked device on CPU (the per-device launcher needs a count)
    device_args = ["hydra.launcher.devices=1"]
    args.work.mkdir(parents=True, exist_ok=True)
    results = {"device": device, "peak_tflops": peak, "parts": {}}
    for part in args.parts:
        started = time.perf_counter()
        log(f"{part} ...")
        try:
            if part == "mfu":
                matmul = gpu_parts.matmul_tflops(int(settings.matmul.n), int(settings.matmul.repeats))
                res = {"matmul": matmul, **gpu_parts.mfu(settings.mfu, matmul, peak, log)}
            elif part == "packing":
                res = gpu_parts.packing(settings.packing, args.work, args.data_dir, device_args, log)
            elif part == "grid":
                res = gpu_parts.grid(settings.grid, args.work, args.data_dir, args.out, device_args, log)
            else:
                raise ValueError(f"unknown part {part!r}; use mfu, packing, grid")
        except Exception as err:  # noqa: BLE001 - one broken part must not hide the others
            traceback.print_exc()
            res = {"error": f"{type(err).__name__}: {err}"}
        res["seconds"] = round(time.perf_counter() - started, 1)
        results["parts"][part] = res
        log(f"{part} done in {res['seconds']:.0f} s")
    return results


def _pct(value) -> str:
    return NOT_MEASURED if value is None else f"{100 * value:.3g}%"


def headline_rows(results: dict) -> list[tuple[str, str, str]]:
    """(what, figure, how) rows of the report's table; a part that did not finish says why."""
    rows, parts = [], results["parts"]
    m = parts.get("mfu", {})
    if "tokens_per_s" in m:
        spec = results["peak_tflops"]
        rows.append(("MFU vs the data sheet", _pct(m["mfu_vs_spec"]),
                     f"{m['model_tflops']:.3g} TFLOP/s of {spec} (bf16 dense)" if spec else "device not in the table"))
        rows.append(("MFU vs a measured matmul", _pct(m["mfu_vs_matmul"]),
                     f"bf16 {m['matmul']['n']}² matmul: {m['matmul']['tflops']:.3g} TFLOP/s"))
        rows.append(("training tokens/s", f"{m['tokens_per_s']:,.0f}",
                     f"N = {m['non_embedding_params']:,}, {m['precision']}, compile "
                     f"{'on' if m['compiled'] else 'off'}, {m['timed_steps']} steps after {m['warm_steps']}"))
    elif "mfu" in parts:
        rows.append(("MFU", NOT_MEASURED, m.get("error", "")))
    p = parts.get("packing", {})
    if "k" in p:
        gain = p["throughput_gain"]
        rows.append((f"{p['k']} runs packed on one device / one at a time", NOT_MEASURED if gain is None
                     else f"{gain:.2f}x", f"aggregate tokens/s {p['packed']['tokens_per_s']:,.0f} vs "
                     f"{p['one_at_a_time']['tokens_per_s']:,.0f}; wall {p['packed']['wall_s']:.0f} s vs "
                     f"{p['one_at_a_time']['wall_s']:.0f} s"))
    elif "packing" in parts:
        rows.append(("packing", NOT_MEASURED, p.get("error", "")))
    g = parts.get("grid", {})
    if "runs" in g:
        capped = "; stopped at its time cap" if g["timed_out"] else ""
        rows.append(("3-size text -> Python grid", f"{g['done']} of {len(g['runs'])} runs done",
                     f"{g['wall_s']:.0f} s wall{capped}; analysis exit {g['analysis']['exit_code']}"))
    elif "grid" in parts:
        rows.append(("grid", NOT_MEASURED, g.get("error", "")))
    return rows


def grid_table(results: dict) -> list[str]:
    runs = results["parts"].get("grid", {}).get("runs", [])
    lines = ["| regime | N | D (chars) | best val bits/char | steps | wall s | status |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["regime"], r["n"] or 0, r["chars"] or 0)):
        loss = "-" if r["bits_per_char"] is None else f"{r['bits_per_char']:.4f}"
        lines.append(f"| {r['regime']} | {r['n']:,} | {r['chars'] or '-'} | {loss} | {r['steps']} | "
                     f"{(r['wall_s'] or 0):.1f} | {r['status']} |")
    return lines if runs else []


def report(results: dict, command: str) -> str:
    dry = results["mode"] == "dry_run"
    lines = ["# GPU check", "", f"`{command}` on {results['device']}, commit {results['git']['commit']}, "
             f"{results['created']}; {results['total_s']:.0f} s in all (budget {results['budget_s']} s: "
             f"{'within' if results['total_s'] <= results['budget_s'] else 'OVER'}).", ""]
    if dry:
        lines += ["**Dry run on CPU at tiny shapes**: it checks that the script and its code paths work. None of "
                  "these figures is a GPU's; torch.compile stays off on CPU.", ""]
    lines += ["| what | figure | how |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in headline_rows(results)]
    table = grid_table(results)
    if table:
        summary = results["parts"]["grid"]["analysis"]["summary"]
        lines += ["", "## The grid's runs", "", *table, "", f"Its analysis: [grid/report.md](grid/report.md) ({summary})."]
    lines += ["", "Every figure and setting is in gpu_check.json beside this file; bench/README.md says how each "
              "is measured."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_lightning()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        why = "this torch is a CPU build: install a CUDA build of torch into .venv" if torch.version.cuda is None \
            else "none is visible here"
        print(f"error: make gpu-check needs a CUDA GPU and {why}; make gpu-check ARGS=--dry-run runs the same script "
              "on CPU at tiny shapes", file=sys.stderr)
        return 2
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    started = time.perf_counter()
    created = dt.datetime.now().isoformat(timespec="seconds")
    results = {"schema": 1, "mode": args.mode, "created": created, "git": git_commit(), "machine": machine_info(),
               "budget_s": int(args.cfg.budget_s), **run_parts(args, log)}
    results["total_s"] = round(time.perf_counter() - started, 1)
    command = "python bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "report.md").write_text(report(results, command.strip()))
    log(f"wrote {args.out / 'report.md'} and gpu_check.json ({results['total_s']:.0f} s)")
    failed = [name for name, part in results["parts"].items() if "error" in part]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
