"""Speed benchmark of transfer_lab: six figures, each a ratio or a time taken in one run.

    make bench                         # default: a few minutes on 2 CPU cores
    make bench ARGS=--quick            # ~1-2 minutes, fewer windows
    make bench ARGS='--only 1,3'       # some figures
    make bench ARGS=--demo-sweep       # figure 5 runs the real demo sweep here (10-20 min)

Prints a table and writes bench/results/latest.json (and a timestamped copy) so two commits can be
compared. bench/README.md explains each figure, how it is measured and what bounds it.
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

from common import BENCH_DATA, RESULTS_DIR, git_commit, machine_info, quiet_lightning  # noqa: E402

NEEDS_GPU = "needs a GPU (not measured)"
DEMO_SIZES = (1, 2, 4)  # model.n_layer at width 32: N = 12.8k, 25.5k, 50.9k (latest.json records each size's shape and N)


def parse_args(argv=None):
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(Path(__file__).with_name("bench.yaml"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer windows and jobs (~1-2 min)")
    p.add_argument("--only", default="1,2,3,4,5,6", help="comma-separated figure numbers, e.g. 1,3,4")
    p.add_argument("--demo-sweep", action="store_true", help="figure 5: run the real demo sweep (10-20 min)")
    p.add_argument("--peak-tflops", type=float, default=float(defaults.peak_tflops),
                   help="device peak TFLOP/s for MFU (default from bench/bench.yaml: %(default)s)")
    p.add_argument("--compile", action="store_true", help="figure 2: model.compile=true (torch.compile)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for figures 1-4 (default 1: stable on a shared 2-core "
                        "machine; 0 keeps torch's default)")
    p.add_argument("--windows", type=int, default=None, help="figure 1: alternated window pairs per size")
    p.add_argument("--steps", type=int, default=None, help="figure 1: timed steps per window")
    p.add_argument("--profile", action="store_true", help="figure 1: profile the Lightning side even if it passes")
    p.add_argument("--out", default=str(RESULTS_DIR), help="folder for latest.json and the timestamped copy")
    args = p.parse_args(argv)
    args.figures = {int(x) for x in args.only.split(",") if x.strip()}
    args.cfg = defaults
    return args


def status(value, target, higher_is_better=True):
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "pass" if ok else "FAIL"


# ---------------------------------------------------------------------------------------------


def figure1(args, log) -> dict:
    import torch
    import train_speed

    windows = args.windows or (2 if args.quick else 4)
    steps = args.steps or (25 if args.quick else 60)
    warm = 5 if args.quick else 10
    target = float(args.cfg.targets.lightning_over_bare)
    sizes = []
    for n_layer in DEMO_SIZES:
        log(f"  figure 1: n_layer={n_layer}, {windows} runs of {warm}+{steps} steps, Lightning and bare in lockstep")
        sizes.append(train_speed.compare([f"model.n_layer={n_layer}"], windows=windows, steps=steps, warm=warm,
                                         label=f"L{n_layer}", log=log))
    worst = min(s["ratio"] for s in sizes)
    control = None
    if not torch.cuda.is_available():
        log(f"  figure 1: A/A control (bare vs bare in lockstep, n_layer={DEMO_SIZES[0]}): the method's noise floor")
        control = train_speed.aa_control([f"model.n_layer={DEMO_SIZES[0]}"], windows=windows, steps=steps, warm=warm)
    out = {"name": "Lightning path vs bare PyTorch loop, tokens/s", "aa_control": control, "unit": "ratio", "value": worst,
           "target": f">= {target}", "status": status(worst, target), "sizes": sizes,
           "torch_threads": torch.get_num_threads(), "method": sizes[0]["estimator"],
           "progress_bar": "off (stderr is redirected during the fit, so fit() sees no TTY)"}
    if (worst < target or args.profile) and not torch.cuda.is_available():
        slow = min(sizes, key=lambda s: s["ratio"])
        size = [f"model.n_layer={slow['n_layer']}"]
        n_prof = 60 if args.quick else 150
        log(f"  figure 1: below target; cProfile of a lockstep run at n_layer={slow['n_layer']} ({n_prof} steps) ...")
        out["profile"] = profile_summary(train_speed.profile_lockstep(size, n_prof))
        if not args.quick:
            log(f"  figure 1: ablation at n_layer={slow['n_layer']}: CausalLM.training_step without its per-step self.log")
            abl = train_speed.compare(size, windows=windows, steps=steps, warm=warm, label=f"L{slow['n_layer']}-nolog",
                                      log=log, variant="no_step_log")
            out["ablation_no_step_log"] = {"n_layer": slow["n_layer"], "ratio": abl["ratio"],
                                           "pair_ratios": abl["pair_ratios"], "with_log_ratio": slow["ratio"]}
    return out


def _group(file: str, function: str) -> str:
    if function.startswith("~") or file.startswith("~"):
        return "C (torch kernels, autograd)"
    for key, name in (("pytorch_lightning", "pytorch_lightning"), ("lightning_fabric", "pytorch_lightning"),
                      ("lightning_utilities", "pytorch_lightning"), ("torchmetrics", "torchmetrics"),
                      ("transfer_lab", "transfer_lab"), ("bench/", "bench (bare loop)"),
                      ("transformers", "transformers"), ("torch", "torch (Python)"), ("numpy", "numpy")):
        if key in file:
            return name
    return "other Python"


def profile_summary(prof: dict) -> dict:
    """Per-step times from a lockstep profile: the Lightning step, the bare step, and where they differ."""
    n, rows = prof["steps"], prof["rows"]

    loop = sum(r["cumtime_s"] for r in rows if r["function"].startswith("training_epoch_loop.py")
               and r["function"].endswith("(advance)")) * 1000 / n
    bare = sum(r["cumtime_s"] for r in rows if r["function"].startswith("train_speed.py") and r["function"].endswith("(step)")) * 1000 / n
    # fit() validates (and saves checkpoints) once, after the last step: outside the timed steps
    val = sum(r["cumtime_s"] for r in rows if r["function"].startswith("evaluation_loop.py")
              and r["function"].endswith("(run)")) * 1000 / n
    light = loop - bare - val
    parts = {
        "LightningModule.log (CausalLM.training_step's self.log)": sum(
            r["cumtime_s"] for r in rows if r["function"].startswith("module.py") and r["function"].endswith("(log)")
            and "pytorch_lightning" in r["file"]) * 1000 / n,
        "_ResultMetric.to (inside self.log)": sum(r["cumtime_s"] for r in rows if r["function"].startswith("result.py")
                                                 and r["function"].endswith("(to)")) * 1000 / n,
        "callback hooks (_call_callback_hooks, excl. the bare step)": sum(
            r["cumtime_s"] for r in rows if r["function"].endswith("(_call_callback_hooks)")) * 1000 / n - bare,
        "apply_to_collection (log, batch transfer, outputs)": sum(
            r["cumtime_s"] for r in rows if r["function"].endswith("(apply_to_collection)")) * 1000 / n,
        "gradient clipping wrappers (_clip_gradients)": sum(
            r["cumtime_s"] for r in rows if r["function"].endswith("(_clip_gradients)")) * 1000 / n,
        "loop bookkeeping (on_advance_end: LR schedulers, val check, excl. the validation)": sum(
            r["cumtime_s"] for r in rows if r["function"].startswith("training_epoch_loop.py")
            and r["function"].endswith("(on_advance_end)")) * 1000 / n - val,
    }
    groups = {}
    for r in rows:
        g = _group(r["file"], r["function"])
        groups[g] = groups.get(g, 0.0) + r["tottime_s"]
    ours = [r for r in rows if _group(r["file"], r["function"]) in ("pytorch_lightning", "transfer_lab")]
    ours.sort(key=lambda r: r["tottime_s"], reverse=True)
    return {
        "steps": n, "note": "cProfile inflates Python time; read these as shares, not absolute costs",
        "lightning_step_ms": round(light, 3), "bare_step_ms": round(bare, 3), "difference_ms": round(light - bare, 3),
        "final_validation_amortised_ms": round(val, 3),
        "lightning_parts_ms": {k: round(v, 3) for k, v in parts.items()},
        "self_ms_per_step_by_package": {g: round(1000 * t / n, 3) for g, t in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top_self_time": [{"function": r["function"], "calls_per_step": round(r["calls"] / n, 2),
                           "self_ms_per_step": round(1000 * r["tottime_s"] / n, 3),
                           "cum_ms_per_step": round(1000 * r["cumtime_s"] / n, 3)} for r in ours[:12]],
    }


def figure2(args, log) -> dict:
    import torch

    peak = float(args.peak_tflops)
    target = float(args.cfg.targets.mfu)
    base = {"name": "model FLOPs utilisation on a GPU", "unit": "fraction of peak", "target": f">= {target}",
            "peak_tflops": peak, "compile": bool(args.compile)}
    if not torch.cuda.is_available():
        return {**base, "value": None, "status": NEEDS_GPU}
    import train_speed

    g = args.cfg.gpu
    overrides = list(g.overrides) + [f"model.compile={str(bool(args.compile)).lower()}"]
    log(f"  figure 2: {' '.join(overrides)} on {torch.cuda.get_device_name(0)}")
    r = train_speed.compare(overrides, windows=int(g.windows), steps=int(g.steps), warm=int(g.warm), label="gpu", log=log)
    mfu = r["flops_per_token"] * r["lightning_tokens_per_s"] / (peak * 1e12)
    mfu_bare = r["flops_per_token"] * r["bare_tokens_per_s"] / (peak * 1e12)
    return {**base, "value": mfu, "status": status(mfu, target), "bare_mfu": mfu_bare,
            "lightning_over_bare": r["ratio"], "lightning_over_bare_status": status(r["ratio"], float(args.cfg.targets.lightning_over_bare)),
            "run": r}


def figure3(args, log, fig1: dict | None) -> dict:
    import data_speed

    target = float(args.cfg.targets.loader_over_training)
    tokenizers = [[]] if args.quick else [[], ["tokenizer=gpt2"]]
    tok = [data_speed.tokenisation(["fortunes_en", "python_small"], t, log=log) for t in tokenizers]
    loader = data_speed.loader([], steps=2000 if args.quick else 5000)
    if fig1 and fig1.get("sizes"):
        fastest = max(fig1["sizes"], key=lambda s: s["lightning_tokens_per_s"])
        train_tps, train_from = fastest["lightning_tokens_per_s"], f"figure 1, n_layer={fastest['n_layer']} (fastest demo size)"
    else:
        import train_speed
        r = train_speed.compare(["model.n_layer=1"], windows=1, steps=20, warm=5, label="L1", log=log)
        train_tps, train_from = r["lightning_tokens_per_s"], "one Lightning window, n_layer=1 (figure 1 not run)"
    ratio = loader["loader_tokens_per_s"] / train_tps
    return {"name": "data: tokenisation MB/s and loader tokens/s vs training", "unit": "ratio", "value": ratio,
            "target": f">= {target}", "status": status(ratio, target), "tokenisation_mb_per_s": tok[0]["mb_per_s"],
            "tokenisation": tok, "loader": loader, "training_tokens_per_s": train_tps, "training_from": train_from}


def figure4(args, log) -> dict:
    import run_cost

    target = float(args.cfg.targets.first_step_s)
    chars = ["1e4"] if args.quick else ["1e4", "3e4", "1e5"]
    extra = ["optim.max_steps=100"] if args.quick else []  # default: the demo experiment's own max_steps
    jobs = run_cost.job_costs(chars, extra, log=log)
    ckpt = run_cost.checkpoint_io([], repeats=3 if args.quick else 5)
    from common import compose
    demo_cfg = compose("regime=scratch")
    demo_bound = run_cost.validation_bound(demo_cfg)
    return {"name": "per-run fixed cost: job start -> first step (demo model)", "unit": "s",
            "value": jobs["to_first_step_s"], "target": f"<= {target}",
            "status": status(jobs["to_first_step_s"], target, higher_is_better=False),
            "checkpoint_save_s": ckpt["save_s"], "checkpoint_load_s": ckpt["load_s"], "checkpoint_bytes": ckpt["bytes"],
            "val_share": jobs["val_share"], "val_share_bound_this_data": jobs["val_share_bound"],
            "val_share_bound_demo_python": demo_bound, "jobs": jobs["jobs"],
            "first_job_to_first_step_s": jobs["first_job_to_first_step_s"], "max_steps": 100 if args.quick else int(compose("regime=scratch").optim.max_steps),
            "val_every_n_steps": jobs["val_every_n_steps"]}


def figure5(args, log) -> dict:
    import sweep_speed
    import torch

    out = {"name": "sweep wall time", "unit": "s"}
    if args.demo_sweep:
        log("  figure 5: running the demo sweep ...")
        cpu = sweep_speed.run_demo_sweep(log=log)
    else:
        cpu = sweep_speed.demo_sweep_on_disk() or {}
        cpu.setdefault("source", "not measured (use --demo-sweep)")
    out["cpu_demo"] = cpu
    if cpu.get("wall_s"):
        out["value"], out["how"] = cpu["wall_s"], "measured now (subprocess wall time)"
    elif cpu.get("hydra_wall_s"):
        out["value"], out["how"] = cpu["hydra_wall_s"], f"latest Hydra multirun folder ({cpu['source']})"
    elif cpu.get("records_wall_s"):
        out["value"], out["how"] = cpu["records_wall_s"], f"sum of run records' wall_time_s ({cpu['source']})"
    else:
        out["value"], out["how"] = None, "not measured (use --demo-sweep)"
    out["status"] = "measured" if out["value"] is not None else "not measured (use --demo-sweep)"
    if torch.cuda.is_available():
        g = args.cfg.gpu
        log(f"  figure 5: tiny grid on the GPU, sequential vs {g.grid_jobs} joblib workers ...")
        out["gpu_grid"] = sweep_speed.gpu_grid(int(g.grid_jobs), int(g.grid_max_steps), log=log)
        out["gpu_ratio"] = out["gpu_grid"]["ratio"]
    else:
        out["gpu_ratio"], out["gpu_grid"] = None, NEEDS_GPU
    return out


def figure6(args, log) -> dict:
    import analysis_speed

    r = analysis_speed.analysis(1000)
    return {"name": "analysis: 100 runs, 1000 bootstrap resamples", "unit": "s", "value": r["seconds"],
            "target": "none set", "status": "measured", **r}


# ---------------------------------------------------------------------------------------------


def fmt_tps(x):
    return f"{x:,.0f}" if x is not None else "-"


def table(results: dict) -> str:
    rows = [("#", "figure", "value", "target", "status")]
    f = results["figures"]
    if "1" in f:
        aa_low = (f["1"].get("aa_control") or {}).get("range", (None,))[0]
        for s in f["1"].get("sizes", []):
            st = status(s["ratio"], float(results["targets"]["lightning_over_bare"]))
            if st == "FAIL" and aa_low is not None and s["ratio"] >= aa_low:
                st = "FAIL (within the A/A noise)"
            rows.append(("1", f"Lightning / bare tokens/s, n_layer={s['n_layer']} (N={s['non_embedding_params']:,})",
                         f"{s['ratio']:.3f} ({fmt_tps(s['lightning_tokens_per_s'])} / {fmt_tps(s['bare_tokens_per_s'])} tok/s)",
                         f1(results, "1", "target"), st))
        aa = f["1"].get("aa_control")
        if aa:
            rows.append(("1", f"A/A control: bare / bare in lockstep, n_layer={DEMO_SIZES[0]}",
                         f"{aa['ratio']:.3f} (range {aa['range'][0]:.3f}-{aa['range'][1]:.3f})", "1.000", "noise floor"))
        if "error" in f["1"]:
            rows.append(("1", "Lightning / bare tokens/s", "error", "", f["1"]["error"][:60]))
    if "2" in f:
        v = f["2"].get("value")
        rows.append(("2", f"MFU (peak {f['2'].get('peak_tflops', '?')} TFLOP/s)", "-" if v is None else f"{v:.1%}",
                     f1(results, "2", "target"), f["2"].get("status", "")))
        if f["2"].get("lightning_over_bare") is not None:
            rows.append(("2", "GPU Lightning / bare tokens/s", f"{f['2']['lightning_over_bare']:.3f}", ">= 0.97",
                         f["2"]["lightning_over_bare_status"]))
    if "3" in f and "error" not in f["3"]:
        d = f["3"]
        for t in d["tokenisation"]:
            rows.append(("3", f"tokenisation ({t['tokenizer']}, {sum(c['mb'] for c in t['corpora']):.1f} MB)",
                         f"{t['mb_per_s']:.2f} MB/s", "-", "measured"))
        rows.append(("3", "data loader alone", f"{fmt_tps(d['loader']['loader_tokens_per_s'])} tok/s", "-", "measured"))
        rows.append(("3", "loader / training tokens/s", f"{d['value']:,.0f}x", d["target"], d["status"]))
    if "4" in f and "error" not in f["4"]:
        d = f["4"]
        rows.append(("4", "job start -> first step (warm process)", f"{d['value']:.2f} s", d["target"], d["status"]))
        rows.append(("4", "checkpoint save / load (AtomicCheckpointIO)",
                     f"{d['checkpoint_save_s'] * 1000:.0f} / {d['checkpoint_load_s'] * 1000:.0f} ms "
                     f"({d['checkpoint_bytes'] / 1e6:.1f} MB)", "(in the 3 s)", "measured"))
        rows.append(("4", "validation share of run time", f"{d['val_share']:.1%}",
                     f"bound {d['val_share_bound_this_data']:.0%} (demo {d['val_share_bound_demo_python']:.0%})",
                     "measured"))
    if "5" in f and "error" not in f["5"]:
        d = f["5"]
        v = d.get("value")
        rows.append(("5", "demo sweep wall time, 2 CPU cores", "-" if v is None else f"{v / 60:.1f} min",
                     "-", d["how"] if v is not None else d["status"]))
        g = d.get("gpu_ratio")
        rows.append(("5", "GPU grid: sequential / joblib wall time", "-" if g is None else f"{g:.2f}x", "-",
                     "measured" if g is not None else NEEDS_GPU))
    if "6" in f and "error" not in f["6"]:
        d = f["6"]
        rows.append(("6", f"analysis, {d['runs']} runs x {d['n_bootstrap']} bootstrap", f"{d['value']:.1f} s",
                     d["target"], d["status"]))
    for key in sorted(f):
        if "error" in f[key] and key not in ("1",):
            rows.append((key, f[key].get("name", f"figure {key}"), "error", "", f[key]["error"][:70]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def f1(results, key, field):
    return results["figures"][key].get(field, "")


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_lightning()
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    started = time.perf_counter()
    results = {"schema": 1, "created": dt.datetime.now().isoformat(timespec="seconds"), "mode": "quick" if args.quick else "default",
               "args": {k: v for k, v in vars(args).items() if k not in ("cfg", "figures")},
               "git": git_commit(), "machine": machine_info(),
               "targets": {k: float(v) for k, v in args.cfg.targets.items()}, "figures": {}}
    log(f"transfer_lab benchmark ({results['mode']}), {results['machine']['device']}, torch threads "
        f"{torch.get_num_threads()}, load {results['machine'].get('load_avg_1m', '?')}; data under {BENCH_DATA}")
    steps = [(1, figure1), (2, figure2), (3, None), (4, figure4), (5, figure5), (6, figure6)]
    for number, fn in steps:
        if number not in args.figures:
            continue
        t0 = time.perf_counter()
        log(f"figure {number} ...")
        try:
            if number == 3:
                import data_speed  # noqa: F401
                res = figure3(args, log, results["figures"].get("1"))
            else:
                res = fn(args, log)
        except Exception as err:  # noqa: BLE001 - one broken figure must not hide the others
            traceback.print_exc()
            res = {"error": f"{type(err).__name__}: {err}"}
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results["figures"][str(number)] = res
        log(f"figure {number} done in {res['seconds']:.0f} s")
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_avg_1m_end"] = machine_info().get("load_avg_1m")
    text = table(results)
    results["table"] = text
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    payload = json.dumps(results, indent=2, default=str)
    (out / f"{stamp}-{results['mode']}.json").write_text(payload)
    (out / "latest.json").write_text(payload)
    print()
    print(text)
    f1res = results["figures"].get("1", {})
    prof = f1res.get("profile")
    if prof:
        print(f"\nfigure 1 profile (cProfile of one lockstep run, ms per step, inflated by the profiler): "
              f"Lightning step {prof['lightning_step_ms']:.1f}, bare step {prof['bare_step_ms']:.1f}, "
              f"difference {prof['difference_ms']:.1f}")
        for k, v in prof["lightning_parts_ms"].items():
            print(f"  {v:7.3f}  {k}")
        print("  top self time (pytorch_lightning / transfer_lab):")
        for r in prof["top_self_time"][:6]:
            print(f"  {r['self_ms_per_step']:7.3f}  {r['function']} ({r['calls_per_step']} calls/step)")
    abl = f1res.get("ablation_no_step_log")
    if abl:
        print(f"  ablation at n_layer={abl['n_layer']}: without CausalLM.training_step's per-step self.log the ratio "
              f"is {abl['ratio']:.3f} (with it: {abl['with_log_ratio']:.3f})")
    print(f"\nwrote {out / 'latest.json'} ({results['total_s']:.0f} s, commit {results['git']['commit']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
