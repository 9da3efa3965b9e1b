"""The training road end to end, in-process on real (small) corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transfer_lab.study import records
from transfer_lab.study.job import run_job
from transfer_lab.training.callbacks import RunRecorder


def runs_of(cfg) -> dict[str, records.RunResult]:
    root = Path(cfg.paths.sweep_dir) / "runs"
    return {p.name: records.read_result(p) for p in root.iterdir()}


@pytest.mark.trains
@pytest.mark.subprocess
def test_scratch_and_finetune_share_one_pretraining_and_rerun_skips(compose_cfg):
    assert run_job(compose_cfg("regime=scratch")) == "done"
    assert run_job(compose_cfg("regime=finetune")) == "done"
    assert run_job(compose_cfg("regime=finetune", "data.finetune_chars=2e4")) == "done"
    cfg = compose_cfg("regime=finetune")
    pretrained = [p for p in Path(cfg.paths.pretrained_dir).iterdir() if p.is_dir()]
    assert len(pretrained) == 1, "a sweep over D_F must pre-train each size once"
    assert (pretrained[0] / "model" / "model.safetensors").exists()
    assert not (pretrained[0] / "checkpoints").exists()

    runs = runs_of(cfg)
    assert len(runs) == 3 and all(r.status == "done" for r in runs.values())
    finetunes = sorted((r for r in runs.values() if r.regime == "finetune"), key=lambda r: r.finetune_chars)
    scratch = next(r for r in runs.values() if r.regime == "scratch")
    assert finetunes[0].pretrain_key == finetunes[1].pretrain_key == pretrained[0].name
    # the budget is the whole pre-training run: ceil(1e4 / (8 × 64)) = 20 steps × 512 tokens
    assert finetunes[0].pretrain_tokens == finetunes[1].pretrain_tokens == 20 * 512
    assert finetunes[0].finetune_chars == pytest.approx(1e4, abs=8) and finetunes[1].finetune_chars > 1.9e4
    assert finetunes[0].finetune_tokens < finetunes[1].finetune_tokens
    assert scratch.non_embedding_params == finetunes[0].non_embedding_params == 1 * (12 * 32**2 + 13 * 32) + 64
    for r in runs.values():
        assert r.best_val_loss <= r.final_val_loss and r.best_val_loss_per_char > 0
        assert r.val_set == scratch.val_set and r.tokenizer == scratch.tokenizer
        assert (Path(cfg.paths.sweep_dir) / "runs" / r.run_key / "config.yaml").exists()
        curve = records.read_metrics(Path(cfg.paths.sweep_dir) / "runs" / r.run_key)
        vals = [row["loss"] for row in curve if row["split"] == "val"]
        assert min(vals) == pytest.approx(r.best_val_loss)
    # pre-training starts the target run far below a random model's loss (ln 300 ≈ 5.7 nats)
    assert finetunes[0].best_val_loss < scratch.best_val_loss

    assert run_job(compose_cfg("regime=scratch")) == "skipped"
    assert run_job(compose_cfg("regime=finetune")) == "skipped"


class Killed(BaseException):
    """Stands in for a kill: not an Exception, so nothing records it as a failure."""


@pytest.mark.trains
@pytest.mark.subprocess
def test_interrupted_run_resumes_to_the_same_result(compose_cfg, monkeypatch, tmp_path):
    # the reference trains under its own output root: in the same one, the killed sweep would
    # reuse its finished twin (same key) instead of training
    reference_cfg = compose_cfg("regime=scratch", "sweep=reference", f"paths.output_root={tmp_path}/reference")
    assert run_job(reference_cfg) == "done"
    reference = next(iter(runs_of(reference_cfg).values()))

    original = RunRecorder.on_validation_end

    def die_at_step_20(self, trainer, pl_module):
        original(self, trainer, pl_module)
        if trainer.global_step == 20:
            raise Killed()

    monkeypatch.setattr(RunRecorder, "on_validation_end", die_at_step_20)
    cfg = compose_cfg("regime=scratch", "sweep=killed")
    with pytest.raises(Killed):
        run_job(cfg)
    (run_dir,) = (Path(cfg.paths.sweep_dir) / "runs").iterdir()
    assert records.read_result(run_dir).status == "running"
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    monkeypatch.setattr(RunRecorder, "on_validation_end", original)
    assert run_job(compose_cfg("regime=scratch", "sweep=killed")) == "done"
    resumed = records.read_result(run_dir)
    assert resumed.best_val_loss == pytest.approx(reference.best_val_loss, abs=1e-6)
    assert resumed.steps == reference.steps
    val_steps = [r["step"] for r in records.read_metrics(run_dir) if r["split"] == "val"]
    assert val_steps == sorted(set(val_steps)), "points logged after the checkpoint must not repeat"


@pytest.mark.trains
@pytest.mark.subprocess
def test_same_seed_same_config_same_result(compose_cfg, tmp_path):
    a = compose_cfg("regime=scratch", "sweep=a", "seed=3")
    b = compose_cfg("regime=scratch", "sweep=b", "seed=3", f"paths.output_root={tmp_path}/b")  # trained again, not reused
    run_job(a), run_job(b)
    (ra,), (rb,) = runs_of(a).values(), runs_of(b).values()
    assert ra.run_key == rb.run_key
    assert ra.best_val_loss == pytest.approx(rb.best_val_loss, abs=1e-6)


@pytest.mark.trains
@pytest.mark.subprocess
def test_diverging_run_is_marked_and_the_sweep_goes_on(compose_cfg, monkeypatch):
    from transfer_lab.training.lightning_module import CausalLM

    original = CausalLM.training_step
    monkeypatch.setattr(CausalLM, "training_step", lambda self, batch, i: original(self, batch, i) * float("nan"))
    cfg = compose_cfg("regime=scratch")
    assert run_job(cfg) == "failed"
    (result,) = runs_of(cfg).values()
    assert result.status == "failed" and result.stop_reason == "diverged" and "nan" in result.error.lower()
    monkeypatch.setattr(CausalLM, "training_step", original)
    assert run_job(compose_cfg("regime=scratch")) == "done", "a failed run is retried on the next sweep"


@pytest.mark.trains
@pytest.mark.subprocess
def test_wandb_offline_logs_every_run_and_never_the_key(compose_cfg, monkeypatch, tmp_path):
    fake_key = "f" * 40
    monkeypatch.setenv("WANDB_API_KEY", fake_key)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg("regime=finetune", "logger=wandb")
    assert run_job(cfg) == "done"
    offline_runs = list(Path(cfg.logger.save_dir).glob("wandb/offline-run-*"))
    assert len(offline_runs) == 2, "the pre-training and the finetune each leave an offline run"
    assert all(list(run.glob("run-*.wandb")) for run in offline_runs)
    leaked = [p for p in Path(cfg.paths.output_root).rglob("*") if p.is_file() and fake_key.encode() in p.read_bytes()]
    assert leaked == []
    (result,) = runs_of(cfg).values()
    assert json.dumps(result.config).count("wandb") >= 1  # the logger config is recorded, the key is not


@pytest.mark.trains
@pytest.mark.subprocess
def test_a_run_ends_at_a_converged_early_stopping_point_scored_on_the_whole_set(compose_cfg):
    from transfer_lab.analysis import collect_local

    cfg = compose_cfg("regime=scratch", "sweep=conv", "data.stopping_val_tokens=512")
    assert run_job(cfg) == "done"
    (run,) = runs_of(cfg).values()
    s = run.schedule
    assert run.converged and run.stop_reason == "early_stop" and run.steps < s["max_steps"]
    assert run.lr_decays == 2 and run.best_step > s["warmup_steps"]  # annealed twice, best after warm-up
    curve = records.read_metrics(Path(cfg.paths.sweep_dir) / "runs" / run.run_key)
    lrs = [row["lr"] for row in curve if row["split"] == "train"]
    assert max(lrs) == pytest.approx(s["lr"]) and lrs[-1] == pytest.approx(s["lr"] * 0.1, rel=1e-3)  # at the floor
    vals = [row["loss"] for row in curve if row["split"] == "val"]
    # early stopping watched a quarter of the set; the result is the whole set at that point
    assert min(vals) == pytest.approx(run.best_stopping_val_loss)
    assert run.best_val_loss != pytest.approx(run.best_stopping_val_loss, abs=1e-6)
    assert run.val_tokens == 2047 and 0 < run.best_val_loss_per_char < run.best_val_loss

    capped = compose_cfg("regime=scratch", "sweep=conv", "data.finetune_chars=2e4", "optim.max_steps=20")
    assert run_job(capped) == "done"
    cut = next(r for r in runs_of(cfg).values() if r.finetune_chars > 1.5e4)
    assert cut.converged is False and cut.stop_reason == "max_steps" and "ceiling" in cut.not_converged_why
    table = collect_local(Path(cfg.paths.output_root), "conv").table.set_index("run_key")
    assert not table.loc[run.run_key, "excluded"]
    assert table.loc[cut.run_key, "excluded"] and "raise optim.max_steps" in table.loc[cut.run_key, "reason"]


@pytest.mark.trains
@pytest.mark.subprocess
def test_a_run_finished_in_another_sweep_is_reused_not_retrained(compose_cfg, monkeypatch):
    import transfer_lab.study.job as job

    first = compose_cfg("regime=scratch", "sweep=first")
    assert run_job(first) == "done"
    (done,) = runs_of(first).values()
    monkeypatch.setattr(job, "load_run_data", lambda *a, **k: pytest.fail("a reused run must not load data"))
    second = compose_cfg("regime=scratch", "sweep=second")
    assert run_job(second) == "skipped"
    (copy,) = runs_of(second).values()
    assert copy.run_key == done.run_key and copy.sweep == "second" and copy.best_val_loss == done.best_val_loss
    folder = Path(second.paths.sweep_dir) / "runs" / copy.run_key
    assert (folder / records.METRICS_FILE).read_text() == (
        Path(first.paths.sweep_dir) / "runs" / done.run_key / records.METRICS_FILE).read_text()
    assert run_job(second) == "skipped"  # and now it is this sweep's own finished run


@pytest.mark.trains
@pytest.mark.subprocess
def test_a_run_stopped_by_its_ceiling_is_extended_by_a_higher_one(compose_cfg, tmp_path):
    capped = compose_cfg("regime=scratch", "sweep=grow", "optim.max_steps=40")
    assert run_job(capped) == "done"
    (short,) = runs_of(capped).values()
    assert short.converged is False and short.steps == 40
    assert (Path(capped.paths.sweep_dir) / "runs" / short.run_key / "checkpoints" / "last.ckpt").exists()  # kept
    legacy = records.read_result(Path(capped.paths.sweep_dir) / "runs" / short.run_key)
    legacy.lineage = ""  # a record from before lineages: its lineage comes from its resolved config
    records.write_result(Path(capped.paths.sweep_dir) / "runs" / short.run_key, legacy)

    higher = compose_cfg("regime=scratch", "sweep=grow", "optim.max_steps=600")
    assert run_job(higher) == "done"
    grown = next(r for r in runs_of(higher).values() if r.run_key != short.run_key)
    assert grown.lineage == short.lineage and grown.converged and grown.steps > 40
    curve = records.read_metrics(Path(higher.paths.sweep_dir) / "runs" / grown.run_key)
    val_steps = [row["step"] for row in curve if row["split"] == "val"]
    assert val_steps[0] == 10 and val_steps == sorted(set(val_steps))  # continued from step 40, not restarted

    # the same as one run trained with the higher ceiling from the start (its own output root)
    straight = compose_cfg("regime=scratch", "sweep=grow", "optim.max_steps=600", f"paths.output_root={tmp_path}/straight")
    assert run_job(straight) == "done"
    (reference,) = runs_of(straight).values()
    assert grown.best_val_loss == pytest.approx(reference.best_val_loss, abs=1e-6) and grown.steps == reference.steps
