"""make gpu-check cannot rot: its dry run (the same script, tiny shapes, CPU) runs every part here,
on the real code paths: fit() in bf16-mixed with compile requested, k runs packed on one faked device
against one at a time, and the 3-size text -> Python grid with its analysis."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from run_helpers import subprocess_env


def test_without_a_gpu_the_full_check_is_one_line_naming_the_dry_run(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import gpu_check

    assert gpu_check.main([]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: make gpu-check needs a CUDA GPU") and "ARGS=--dry-run" in line


@pytest.mark.parametrize("device, tflops", [("NVIDIA H100 PCIe", 756), ("NVIDIA H100 80GB HBM3", 989),
                                            ("NVIDIA H200", 989), ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A10", 125),
                                            ("NVIDIA L4", 121), ("NVIDIA L40S", 362), ("NVIDIA T4", None)])
def test_the_device_peak_is_the_data_sheets_for_the_name_torch_reports(device, tflops, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import gpu_parts

    table = OmegaConf.load(ROOT / "bench" / "bench.yaml").gpu_check.peaks_tflops
    assert gpu_parts.spec_peak(device, table) == tflops


@pytest.mark.subprocess
@pytest.mark.trains
def test_the_dry_run_measures_every_part_and_writes_its_report(tmp_path, data_dir):
    outputs, report = tmp_path / "outputs", tmp_path / "report"
    outputs.mkdir()
    (outputs / "data").symlink_to(data_dir)  # the session's prepared corpora
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(report)], cwd=ROOT,
                          env=subprocess_env(TRANSFER_LAB_OUTPUTS=str(outputs)), capture_output=True, text=True,
                          timeout=800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads((report / "gpu_check.json").read_text())
    assert result["mode"] == "dry_run" and result["total_s"] > 0 and result["peak_tflops"] is None
    mfu, packing, grid = (result["parts"][p] for p in ("mfu", "packing", "grid"))

    assert mfu["tokens_per_s"] > 0 and 0 < mfu["mfu_vs_matmul"] < 1 and mfu["mfu_vs_spec"] is None
    assert mfu["precision"] == "bf16-mixed" and mfu["compile_requested"] and not mfu["compiled"], \
        "compile is asked for, and kept off on CPU"

    k = packing["k"]
    for mode in ("one_at_a_time", "packed"):
        assert packing[mode]["exit_code"] == 0 and packing[mode]["done"] == k and not packing[mode]["timed_out"]
    assert packing["throughput_gain"] == pytest.approx(
        packing["packed"]["tokens_per_s"] / packing["one_at_a_time"]["tokens_per_s"])
    jobs = packing["packed"]["jobs"]
    assert len(jobs) == k and {j["device"] for j in jobs} == {"0"}, "k jobs, all on the one device"
    assert len({j["device_place"] for j in jobs}) == len({j["worker"] for j in jobs}) <= k

    assert grid["exit_code"] == 0 and grid["done"] == len(grid["runs"]) == 9
    assert sorted(r["regime"] for r in grid["runs"]) == ["finetune"] * 3 + ["pretrain"] * 3 + ["scratch"] * 3
    assert len({r["n"] for r in grid["runs"]}) == 3, "three sizes"
    assert grid["analysis"]["exit_code"] == 0 and grid["analysis"]["summary"].startswith("sweep gpu_check: 9 runs")
    assert (report / "grid" / "report.md").exists() and not (report / "grid" / "wandb").exists()

    text = (report / "report.md").read_text()
    assert "Dry run on CPU" in text and "| MFU vs the data sheet | not measured |" in text
    assert f"| {k} runs packed on one device / one at a time | {packing['throughput_gain']:.2f}x |" in text
    assert text.count("| done |") == 9
    assert not os.path.exists(ROOT / "docs" / "results" / "gpu" / "gpu_check.json"), "a dry run never writes there"
