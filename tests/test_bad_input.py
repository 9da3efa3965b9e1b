"""Bad-input catalog: every user mistake is one line on stderr that names the problem and the fix,
exit status 2, no traceback, and nothing already written is damaged.

Most cases run in-process through the functions train.py and analyze.py call (`run_job`, which
validates before it builds data; `collect_local` / `run_cli` for the analysis), then render the
error through `errors.exit_with`. A few run the real scripts in a subprocess (marked slow).
Every case snapshots a finished sweep (a done scratch run, a done finetune and its pre-trained
model) before the bad command and checks its files byte for byte afterwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import analysis_synth as syn
import pytest
from conftest import ROOT, at_test_size, compose

from transfer_lab import errors
from transfer_lab.errors import ConfigError, DataError, ResultsError, UserError
from transfer_lab.study import records

FIX = re.compile(r"\b(use|set|choose|pick|raise|lower|delete|remove|fix|give|convert|point|match|add|check|"
                 r"run|re-run|split|analyse|write|quote)\b|e\.g\.", re.IGNORECASE)
SWEEP = "keep"  # the finished sweep every bad command runs beside


# --- helpers -----------------------------------------------------------------------------------

def snapshot(*roots: Path) -> dict[Path, str]:
    """sha256 of every file under `roots` (lock files excluded: they are empty and come and go)."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for root in roots for p in Path(root).rglob("*")
            if p.is_file() and not p.name.endswith(".lock")}


def run_folders(world: "World") -> set[str]:
    return {p.name for p in world.runs.iterdir()} if world.runs.is_dir() else set()


def assert_intact(before: dict[Path, str]) -> None:
    damaged = [str(p) for p, digest in before.items()
               if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != digest]
    assert damaged == [], f"a bad command changed or removed files that were already written: {damaged[:5]}"


def check_message(err: BaseException, names: tuple[str, ...]) -> str:
    """A UserError whose text is one line naming `names` and suggesting a fix."""
    assert isinstance(err, UserError), f"{type(err).__name__} is not a UserError: {err}"
    text = str(err)
    assert "\n" not in text and "Traceback" not in text, f"not one line: {text!r}"
    for name in names:
        assert name in text, f"{name!r} not named in: {text}"
    assert FIX.search(text), f"no fix suggested in: {text}"
    return text


def render(err: UserError, capsys) -> str:
    """What train.py / analyze.py print for `err`: exactly one stderr line, nothing on stdout, exit 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        errors.exit_with(err)
    out, stderr = capsys.readouterr()
    assert exited.value.code == 2
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    assert out == ""
    return lines[0]


def expect_user_error(call: Callable, names: tuple[str, ...], kind: type[UserError], capsys) -> str:
    with pytest.raises(UserError) as caught:
        call()
    check_message(caught.value, names)
    assert isinstance(caught.value, kind), f"{type(caught.value).__name__}, expected {kind.__name__}: {caught.value}"
    return render(caught.value, capsys)


def private_data_dir(tmp: Path, shared: Path, copy: tuple[str, ...] = ()) -> Path:
    """A data dir that links the shared raw downloads and prepared corpora; corpora named in `copy`
    are real copies, so a test can tamper with them without touching the shared ones."""
    data = tmp / "data"
    (data / "prepared").mkdir(parents=True)
    if (shared / "raw").exists():
        (data / "raw").symlink_to(shared / "raw", target_is_directory=True)
    for entry in (shared / "prepared").iterdir():
        if entry.is_dir() and not entry.name.startswith("."):
            target = data / "prepared" / entry.name
            if entry.name.rsplit("-", 1)[0] in copy:
                shutil.copytree(entry, target)
            else:
                target.symlink_to(entry, target_is_directory=True)
    return data


@dataclass
class World:
    """A finished sweep (scratch + finetune done, one pre-trained model) and a composer beside it."""
    root: Path
    data_dir: Path
    cache_dir: Path

    def cfg(self, *overrides: str, root: Path | None = None, data_dir: Path | None = None,
            cache_dir: Path | None = None):
        paths = [f"paths.output_root={root or self.root}", f"paths.data_dir={data_dir or self.data_dir}",
                 f"paths.cache_dir={cache_dir or self.cache_dir}"]
        sweep = [] if any(o.startswith("sweep=") for o in overrides) else [f"sweep={SWEEP}"]
        return compose(*paths, *sweep, *overrides)

    @property
    def runs(self) -> Path:
        return self.root / "sweeps" / SWEEP / "runs"

    @property
    def pretrained_model(self) -> Path:
        (folder,) = [p for p in (self.root / "pretrained").iterdir() if p.is_dir()]
        return folder / "model"


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_dir, cache_dir) -> World:
    from transfer_lab.study.job import run_job

    w = World(tmp_path_factory.mktemp("world"), data_dir, cache_dir)
    assert run_job(w.cfg("regime=scratch")) == "done"
    assert run_job(w.cfg("regime=finetune")) == "done"
    return w


@pytest.fixture(scope="module")
def bare_world(tmp_path_factory) -> World:
    """A finished sweep of records only, and empty data and cache folders: the config errors are raised
    before any corpus is prepared or any step trained, so they need no more (the fast tier runs them)."""
    from transfer_lab.study import records

    w = World(tmp_path_factory.mktemp("bare"), tmp_path_factory.mktemp("no_data"), tmp_path_factory.mktemp("no_cache"))
    for regime in ("scratch", "finetune"):
        run = records.RunResult(run_key=f"{regime}-finished", sweep=SWEEP, regime=regime, status="done",
                                non_embedding_params=13_000, finetune_chars=10_000, best_val_loss_per_char=2.5)
        records.write_result(w.runs / run.run_key, run)
    return w


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    """User corpora that cannot be used, each with a `kind: files` spec beside it."""
    folder = tmp_path_factory.mktemp("bad_files")
    import textwrap

    text = Path(textwrap.__file__).read_text() * 3
    (folder / "good.txt").write_text(text)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blank.txt").write_text("   \n\n \t \n")
    (folder / "binary.txt").write_bytes(b"PK\x03\x04\x00\x00" + bytes(range(256)) * 8)
    (folder / "latin1.txt").write_bytes("Grüße aus Köln, ça va?\n".encode("latin-1") * 50)
    (folder / "tiny.txt").write_text("a few words only\n")

    def spec(name: str, **fields) -> None:
        body = {"name": f"bad_{name}", "kind": "files", "language": "code", "val_chars": 2000, **fields}
        (folder / f"{name}.yaml").write_text(json.dumps(body))  # JSON is YAML

    for name in ("good", "empty", "blank", "binary", "latin1"):
        spec(name, paths=[str(folder / f"{name}.txt")])
    spec("tiny", paths=[str(folder / "tiny.txt")], val_chars=300000)
    spec("missing", paths=[str(folder / "nope.txt")])
    spec("noglob", paths=[str(folder / "**" / "*.parquet")])
    spec("folder", paths=[str(folder)])
    os.mkfifo(folder / "pipe.txt")  # reading either would never end (or block): they are never opened
    os.symlink("loop.txt", folder / "loop.txt")
    spec("devzero", paths=["/dev/zero"])
    spec("fifo", paths=[str(folder / "pipe.txt")])
    spec("loop", paths=[str(folder / "loop.txt")])
    (folder / "badkind.yaml").write_text("name: bad_kind\nkind: ftp\n")
    (folder / "typo.yaml").write_text(f"name: bad_typo\nkind: files\npathz: [{folder}/good.txt]\n")
    (folder / "broken.yaml").write_text("name: [unclosed\nkind: files\n")
    (folder / "remote_code.yaml").write_text("name: bad_remote\nkind: hub\npath: someone/dataset\nmax_chars: 1000000\n"
                                             "val_chars: 1000\nload_kwargs: {trust_remote_code: true}\n")
    return folder


# --- 1. config: every numeric key out of range or of the wrong type, names that do not exist ----

CONFIG_CASES = [
    # (id, overrides, names the message must contain, error class)
    ("n_layer_zero", ["model.n_layer=0"], ("model.n_layer",), ConfigError),
    ("n_layer_text", ["model.n_layer=abc"], ("model.n_layer",), ConfigError),
    ("n_layer_fraction", ["model.n_layer=2.5"], ("model.n_layer",), ConfigError),
    ("n_embd_negative", ["model.n_embd=-32"], ("model.n_embd",), ConfigError),
    ("n_head_bool", ["model.n_head=true"], ("model.n_head",), ConfigError),
    ("n_embd_not_divisible", ["model.n_embd=30", "model.n_head=4"], ("model.n_embd", "model.n_head"), ConfigError),
    ("n_ctx_beyond_positions", ["model.n_positions=32"], ("model.n_ctx", "model.n_positions"), ConfigError),
    ("dropout_above_range", ["model.dropout=1.5"], ("model.dropout",), ConfigError),
    ("pad_vocab_zero", ["model.pad_vocab_multiple=0"], ("model.pad_vocab_multiple",), ConfigError),
    ("attention_unknown", ["model.attn_implementation=flash"], ("model.attn_implementation",), ConfigError),
    ("compile_not_bool", ["model.compile=maybe"], ("model.compile",), ConfigError),
    ("lr_zero", ["optim.lr=0"], ("optim.lr",), ConfigError),
    ("lr_text", ["optim.lr=fast"], ("optim.lr",), ConfigError),
    ("lr_nan", ["optim.lr=nan"], ("optim.lr",), ConfigError),
    ("weight_decay_negative", ["optim.weight_decay=-0.1"], ("optim.weight_decay",), ConfigError),
    ("betas_out_of_range", ["optim.betas=[0.9,1.5]"], ("optim.betas",), ConfigError),
    ("betas_not_a_pair", ["optim.betas=0.9"], ("optim.betas",), ConfigError),
    ("warmup_negative", ["optim.warmup_steps=-1"], ("optim.warmup_steps",), ConfigError),
    ("min_lr_ratio_above_one", ["optim.min_lr_ratio=2"], ("optim.min_lr_ratio",), ConfigError),
    ("gradient_clip_zero", ["optim.gradient_clip=0"], ("optim.gradient_clip",), ConfigError),
    ("batch_size_zero", ["optim.batch_size=0"], ("optim.batch_size",), ConfigError),
    ("val_batch_size_text", ["optim.val_batch_size=big"], ("optim.val_batch_size",), ConfigError),
    ("max_steps_zero", ["optim.max_steps=0"], ("optim.max_steps",), ConfigError),
    ("val_every_zero", ["optim.val_every_n_steps=0"], ("optim.val_every_n_steps",), ConfigError),
    ("patience_zero", ["optim.patience=0"], ("optim.patience",), ConfigError),
    ("min_rel_improvement_negative", ["optim.min_rel_improvement=-1"], ("optim.min_rel_improvement",), ConfigError),
    ("val_tokens_one", ["data.val_tokens=1"], ("data.val_tokens",), ConfigError),
    ("finetune_chars_zero", ["data.finetune_chars=0"], ("data.finetune_chars",), ConfigError),
    ("finetune_chars_text", ["data.finetune_chars=lots"], ("data.finetune_chars",), ConfigError),
    ("seed_negative", ["seed=-1"], ("seed",), ConfigError),
    ("seed_too_large", ["seed=1e12"], ("seed",), ConfigError),
    ("pretrain_tokens_zero", ["regime=finetune", "pretrain.tokens=0"], ("pretrain.tokens",), ConfigError),
    ("pretrain_no_budget", ["regime=finetune", "pretrain.tokens=null", "pretrain.chars=null"],
     ("pretrain.tokens", "pretrain.chars"), ConfigError),
    ("pretrain_two_budgets", ["regime=finetune", "pretrain.chars=1e6"], ("pretrain.tokens", "pretrain.chars"),
     ConfigError),
    ("pretrain_lr_too_big", ["regime=finetune", "pretrain.lr=5"], ("pretrain.lr",), ConfigError),
    ("pretrain_batch_zero", ["regime=finetune", "pretrain.batch_size=0"], ("pretrain.batch_size",), ConfigError),
    ("log_every_zero", ["trainer.log_every_n_steps=0"], ("trainer.log_every_n_steps",), ConfigError),
    ("precision_unknown", ["trainer.precision=fp8"], ("trainer.precision",), ConfigError),
    ("accelerator_unknown", ["trainer.accelerator=quantum"], ("trainer.accelerator",), ConfigError),
    ("regime_unknown", ["regime=transfer"], ("regime",), ConfigError),
    ("sweep_escapes_outputs", ["sweep=../elsewhere"], ("sweep",), ConfigError),
    ("interpolation_is_not_eval", ["sweep=${eval:1+1}"], ("sweep",), ConfigError),
    ("sweep_name_too_long", ["sweep=" + "s" * 300], ("sweep", "300 characters"), ConfigError),
    ("sweep_name_with_a_newline", ["sweep='two\nlines'"], ("sweep", "control character"), ConfigError),
    ("trainer_target_overridden", ["trainer._target_=builtins.print"], ("trainer._target_", "builtins.print"),
     ConfigError),
    ("tokenizer_kind_unknown", ["tokenizer.kind=sentencepiece"], ("tokenizer.kind",), ConfigError),
    ("vocab_too_small", ["tokenizer.vocab_size=100"], ("tokenizer.vocab_size",), ConfigError),
    ("vocab_too_large", ["tokenizer.vocab_size=1e6"], ("tokenizer.vocab_size",), ConfigError),
    ("tokenizer_chars_zero", ["tokenizer.train_chars=0"], ("tokenizer.train_chars",), ConfigError),
    ("target_corpus_unknown", ["data.target=klingon"], ("data.target", "klingon"), ConfigError),
    ("source_corpus_unknown", ["regime=finetune", "data.source=klingon"], ("data.source", "klingon"), ConfigError),
    ("source_weight_zero", ["regime=finetune", "data.source={fortunes_en:0,python_small:1}"],
     ("data.source.fortunes_en",), ConfigError),
    ("source_weight_negative", ["regime=finetune", "data.source={fortunes_en:-1,python_small:1}"],
     ("data.source.fortunes_en",), ConfigError),
    ("source_mixture_of_one", ["regime=finetune", "data.source={fortunes_en:1}"], ("data.source=fortunes_en",),
     ConfigError),
    ("source_mixture_unknown", ["regime=finetune", "data.source={fortunes_en:1,klingon:1}"],
     ("data.source.klingon",), ConfigError),
    ("init_from_missing", ["regime=finetune", "pretrain.init_from=/nonexistent/model"], ("pretrain.init_from",),
     ConfigError),
]
# the two a corpus's size decides: raised once the corpus is prepared, still before any step trains
DATA_SIZE_CASES = [
    ("finetune_chars_beyond_corpus", ["data.finetune_chars=1e9"], ("data.finetune_chars",), DataError),
    ("finetune_chars_below_one_context", ["data.finetune_chars=10"], ("data.finetune_chars",), DataError),
]


@pytest.mark.parametrize("overrides,names,kind", [c if type(c) is not tuple else pytest.param(*c[1:], id=c[0])
                                                  for c in CONFIG_CASES])
def test_config_catalog(bare_world, overrides, names, kind, capsys):
    from transfer_lab.study.job import run_job

    world = bare_world
    before, folders = snapshot(world.root), run_folders(world)
    expect_user_error(lambda: run_job(world.cfg("regime=scratch", *overrides)), names, kind, capsys)
    assert_intact(before)
    assert run_folders(world) == folders, "a bad command left a run folder (config.yaml, no results.json)"
    assert not any(world.data_dir.iterdir()) and not any(world.cache_dir.iterdir()), "a bad config built data"


@pytest.mark.trains
@pytest.mark.subprocess
@pytest.mark.parametrize("overrides,names,kind", [c[1:] for c in DATA_SIZE_CASES], ids=[c[0] for c in DATA_SIZE_CASES])
def test_data_size_catalog(world, overrides, names, kind, capsys):
    from transfer_lab.study.job import run_job

    before, folders = snapshot(world.root), run_folders(world)
    expect_user_error(lambda: run_job(world.cfg("regime=scratch", *overrides)), names, kind, capsys)
    assert_intact(before)
    assert run_folders(world) == folders, "a bad command left a run folder (config.yaml, no results.json)"


def test_gpu_asked_for_on_a_cpu_machine(bare_world, capsys):
    import torch

    from transfer_lab.study.job import run_job

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    world = bare_world
    before = snapshot(world.root)
    expect_user_error(lambda: run_job(world.cfg("regime=scratch", "trainer.accelerator=gpu")),
                      ("trainer.accelerator",), ConfigError, capsys)
    assert_intact(before)


# --- command-line errors Hydra would report on several lines (study/launch_checks.py pre-checks them) -----------

CLI_CASES = [
    ("unknown_experiment", ["experiment=nope"], ("experiment=nope", "demo")),
    ("unknown_model", ["model=huge"], ("model=huge", "tiny")),
    ("unknown_tokenizer", ["tokenizer=wordpiece"], ("tokenizer=wordpiece", "bpe")),
    ("unknown_group_in_sweep", ["-m", "model=tiny,huge"], ("model=huge",)),
    ("unknown_key", ["model.n_layers=3"], ("model.n_layers", "model.n_layer")),
    ("unknown_top_level_key", ["learning_rate=3e-4"], ("learning_rate", "+learning_rate")),
    ("append_existing_key", ["+model.n_layer=3"], ("model.n_layer",)),
    ("unparsable_override", ["regime=scratch", "model.n_layer=[1,"], ("model.n_layer=[1,", "quote")),
    ("unknown_launcher", ["-m", "hydra/launcher=warp", "model.n_layer=1,2"], ("hydra/launcher",)),
    # before Hydra makes sweeps/<sweep>/hydra/: a name too long for a folder, a name with a newline
    ("sweep_name_too_long", ["sweep=" + "s" * 300], ("sweep=", "300 characters")),
    ("sweep_name_with_a_newline", ["-m", "sweep='two\nlines'", "model.n_layer=1,2"], ("sweep=", "control character")),
]


@pytest.mark.parametrize("argv,names", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_command_line_catalog(argv, names, capsys):
    from transfer_lab.study.launch_checks import check_experiment_override

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        check_experiment_override(argv)
    out, stderr = capsys.readouterr()
    assert exited.value.code == 2
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and out == "", stderr
    for name in names:
        assert name in lines[0], lines[0]
    assert FIX.search(lines[0]), lines[0]


@pytest.mark.parametrize("argv", [["-m", "model.n_layer=1,2", "data.finetune_chars=1e4,3e4"],
                                  ["experiment=smoke", "+model.extra=1", "~model.compile"],
                                  ["hydra/launcher=joblib", "regime=scratch"], ["--cfg", "job", "anything=1"]])
def test_command_line_precheck_lets_good_commands_through(argv):
    from transfer_lab.study.launch_checks import check_experiment_override

    check_experiment_override(argv)  # no SystemExit


def test_analyze_command_line_is_prechecked_too(capsys):
    from transfer_lab.study.launch_checks import check_overrides

    with pytest.raises(SystemExit) as exited:
        check_overrides(["fit.n_bootstrp=10"], "analyze")
    assert exited.value.code == 2 and "fit.n_bootstrap" in capsys.readouterr().err
    check_overrides(["fit.n_bootstrap=10", "sweep=demo"], "analyze")


# --- 2. data: empty, binary, invalid UTF-8, missing, globs, tampered caches, truncated tokens ----

FILES_CASES = [
    ("empty_file", "empty", ("bad_empty",), DataError),
    ("whitespace_only_file", "blank", ("bad_blank",), DataError),
    ("binary_file", "binary", ("binary.txt", "UTF-8"), DataError),
    ("invalid_utf8", "latin1", ("latin1.txt", "UTF-8", "encoding_errors"), DataError),
    ("missing_file", "missing", ("nope.txt",), DataError),
    ("glob_matches_nothing", "noglob", ("*.parquet",), DataError),
    ("path_is_a_folder", "folder", ("is a folder",), DataError),
    ("path_is_dev_zero", "devzero", ("/dev/zero", "character device"), DataError),
    ("path_is_a_fifo", "fifo", ("pipe.txt", "FIFO"), DataError),
    ("path_is_a_link_loop", "loop", ("loop.txt", "symbolic link loop"), DataError),
    ("too_small_for_validation", "tiny", ("bad_tiny", "val_chars"), DataError),
    ("spec_unknown_kind", "badkind", ("data.target", "kind"), ConfigError),
    ("spec_misspelt_key", "typo", ("data.target", "pathz"), ConfigError),
    ("spec_broken_yaml", "broken", ("data.target", "broken.yaml"), ConfigError),
    ("hub_spec_asks_for_remote_code", "remote_code", ("data.target", "trust_remote_code"), ConfigError),
]


@pytest.mark.parametrize("spec,names,kind", [c[1:] for c in FILES_CASES], ids=[c[0] for c in FILES_CASES])
@pytest.mark.trains
@pytest.mark.subprocess
def test_data_files_catalog(world, bad_files, spec, names, kind, capsys):
    from transfer_lab.study.job import run_job

    before, folders = snapshot(world.root, world.data_dir / "prepared"), run_folders(world)
    cfg = world.cfg("regime=scratch", f"data.target={bad_files / spec}.yaml")
    expect_user_error(lambda: run_job(cfg), names, kind, capsys)
    assert_intact(before)
    assert run_folders(world) == folders
    assert not list((world.data_dir / "prepared").glob(".tmp-bad_*")), "a failed build left its temp folder"


def _tamper_train_jsonl(folder: Path) -> None:
    with (folder / "train.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "an edited document"}) + "\n")


def _truncate_val_jsonl(folder: Path) -> None:
    data = (folder / "val.jsonl").read_bytes()
    (folder / "val.jsonl").write_bytes(data[: len(data) // 2])


def _break_manifest(folder: Path) -> None:
    (folder / "manifest.json").write_text('{"content_hash": ')


PREPARED_CASES = [
    ("prepared_train_edited", _tamper_train_jsonl, ("python_small", "manifest", "delete")),
    ("prepared_val_truncated", _truncate_val_jsonl, ("python_small", "manifest", "delete")),
    ("prepared_manifest_broken", _break_manifest, ("python_small", "manifest.json", "delete")),
]


@pytest.mark.parametrize("tamper,names", [c[1:] for c in PREPARED_CASES], ids=[c[0] for c in PREPARED_CASES])
@pytest.mark.trains
@pytest.mark.subprocess
def test_tampered_prepared_corpus(world, tmp_path, tamper, names, capsys):
    from transfer_lab.data.corpora import load_corpus_spec
    from transfer_lab.data.corpora.build import folder_name
    from transfer_lab.study.job import run_job

    data = private_data_dir(tmp_path, world.data_dir, copy=("python_small",))
    folder = data / "prepared" / folder_name(load_corpus_spec("python_small"))
    tamper(folder)
    before = snapshot(world.root, folder)
    cfg = world.cfg("regime=scratch", "data.finetune_chars=2e4", data_dir=data)  # not the finished run's key
    expect_user_error(lambda: run_job(cfg), names, DataError, capsys)
    assert_intact(before)  # an error, never a silent rebuild over the user's files


@pytest.mark.trains
@pytest.mark.subprocess
def test_files_changed_since_prepared(world, bad_files, tmp_path, capsys):
    from transfer_lab.data.corpora import prepare_corpus
    from transfer_lab.study.job import run_job

    text = tmp_path / "mine.txt"
    text.write_text((bad_files / "good.txt").read_text())
    spec = tmp_path / "mine.yaml"
    spec.write_text(json.dumps({"name": "mine", "kind": "files", "language": "code", "val_chars": 2000,
                                "paths": [str(text)]}))
    data = private_data_dir(tmp_path, world.data_dir)
    prepare_corpus(str(spec), data_dir=data)
    with text.open("a") as handle:
        handle.write("\n# edited after preparing\n")
    before = snapshot(world.root, data / "prepared")
    expect_user_error(lambda: run_job(world.cfg("regime=scratch", f"data.target={spec}", data_dir=data)),
                      ("mine.txt", "changed", "delete"), DataError, capsys)
    assert_intact(before)


def _private_cache(world: World, tmp: Path) -> Path:
    cache = tmp / "cache"
    shutil.copytree(world.cache_dir, cache, ignore=shutil.ignore_patterns("*.lock"))
    return cache


def _truncate_tokens(cache: Path, tokens: Path) -> None:
    path = tokens / "train.tokens.bin"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 1])


def _truncate_char_ends(cache: Path, tokens: Path) -> None:
    path = tokens / "val.chars.bin"
    path.write_bytes(path.read_bytes()[:-8])


def _break_token_meta(cache: Path, tokens: Path) -> None:
    (tokens / "meta.json").write_text("{\"corpus\": ")


def _corrupt_tokenizer(cache: Path, tokens: Path) -> None:
    for path in (cache / "tokenizers").glob("*/tokenizer.json"):
        path.write_text('{"version": "1.0", "model": ')


def _token_folder(world: World, cache: Path) -> Path:
    from transfer_lab.data.corpora import load_corpus_spec
    from transfer_lab.data.corpora.build import folder_name

    tokenizer = next(records.read_result(p).tokenizer for p in world.runs.iterdir() if p.name.startswith("scratch-")
                     and (p / records.RESULTS_FILE).exists())
    return cache / "tokens" / f"{folder_name(load_corpus_spec('python_small'))}--{tokenizer}"


@pytest.mark.parametrize("damage, file", [(_truncate_tokens, "train.tokens.bin"), (_truncate_char_ends, "val.chars.bin"),
                                          (_break_token_meta, "meta.json")],
                         ids=["token_file_truncated", "char_file_truncated", "token_meta_corrupt"])
@pytest.mark.trains
@pytest.mark.subprocess
def test_a_damaged_token_file_is_rebuilt_with_a_warning(world, tmp_path, damage, file, caplog):
    from transfer_lab.data import token_files
    from transfer_lab.study.job import run_job

    cache = _private_cache(world, tmp_path)
    tokens = _token_folder(world, cache)
    intact = (tokens / file).read_bytes()
    damage(cache, tokens)
    token_files._VERIFIED.clear()  # a new process checks the files once
    before = snapshot(world.root)
    with caplog.at_level("INFO", logger="transfer_lab"):
        assert run_job(world.cfg("regime=scratch", "data.finetune_chars=2e4", root=tmp_path / "out",
                                 cache_dir=cache)) == "done"
    assert any("warning:" in r.message and "re-tokenising" in r.message for r in caplog.records)
    if file != "meta.json":
        assert (tokens / file).read_bytes() == intact
    assert_intact(before)


@pytest.mark.trains
@pytest.mark.subprocess
def test_a_corrupt_tokenizer_file_is_one_line(world, tmp_path, capsys):
    from transfer_lab.study.job import run_job

    cache = _private_cache(world, tmp_path)
    _corrupt_tokenizer(cache, _token_folder(world, cache))
    before = snapshot(world.root)
    expect_user_error(lambda: run_job(world.cfg("regime=scratch", "data.finetune_chars=2e4", root=tmp_path / "out",
                                                cache_dir=cache)), ("tokenizer.json", "delete"), DataError, capsys)
    assert_intact(before)


# --- fine-tuning a pre-trained model made with another shape or tokenizer -----------------------

def _trains_anyway(*args, **kwargs):
    raise AssertionError("the mismatched pre-trained model was accepted: fine-tuning started")


@pytest.mark.trains
@pytest.mark.subprocess
def test_init_from_a_model_of_another_shape(world, capsys):
    from transfer_lab.study.job import run_job

    before = snapshot(world.root)
    cfg = world.cfg("regime=finetune", f"pretrain.init_from={world.pretrained_model}", "model.n_embd=64",
                    "model.n_head=2")
    expect_user_error(lambda: run_job(cfg), ("pretrain.init_from", "n_embd"), ConfigError, capsys)
    assert_intact(before)


@pytest.mark.trains
@pytest.mark.subprocess
def test_init_from_a_model_made_with_another_tokenizer(world, monkeypatch, capsys):
    from transfer_lab.study import job

    monkeypatch.setattr(job, "train_and_record", _trains_anyway)
    before = snapshot(world.root)
    cfg = world.cfg("regime=finetune", f"pretrain.init_from={world.pretrained_model}", "tokenizer.vocab_size=320",
                    "sweep=mismatch")
    expect_user_error(lambda: job.run_job(cfg), ("pretrain.init_from", "tokenizer"), ConfigError, capsys)
    assert_intact(before)


@pytest.mark.trains
@pytest.mark.subprocess
def test_cached_pretrained_model_made_with_another_tokenizer(world, tmp_path, monkeypatch, capsys):
    from transfer_lab.study import job

    monkeypatch.setattr(job, "train_and_record", _trains_anyway)
    pretrained = tmp_path / "pretrained"
    shutil.copytree(world.root / "pretrained", pretrained, ignore=shutil.ignore_patterns("*.lock"))
    (folder,) = [p for p in pretrained.iterdir() if p.is_dir()]
    record = json.loads((folder / "results.json").read_text())
    record["tokenizer"] = "bpe300-0badc0de"
    (folder / "results.json").write_text(json.dumps(record))
    cfg = world.cfg("regime=finetune", "data.finetune_chars=3e4", f"paths.pretrained_dir={pretrained}",
                    "sweep=mismatch")
    expect_user_error(lambda: job.run_job(cfg), ("tokenizer",), UserError, capsys)


# --- 3. results: corrupt, truncated, duplicated, mixed ------------------------------------------

def _copy_sweep(world: World, tmp: Path) -> tuple[Path, dict[str, Path]]:
    """The finished runs of the world's sweep (its two records), copied to damage them."""
    root = tmp / "outputs"
    runs = {}
    for folder in world.runs.iterdir():
        if (folder / records.RESULTS_FILE).exists() and records.read_result(folder).status == "done":
            runs[records.read_result(folder).regime] = shutil.copytree(folder, root / "sweeps" / SWEEP / "runs" /
                                                                       folder.name)
    assert sorted(runs) == ["finetune", "scratch"]
    return root, runs


def _garbage(runs):
    (runs["scratch"] / "results.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe garbage")


def _truncated(runs):
    path = runs["scratch"] / "results.json"
    path.write_bytes(path.read_bytes()[:200])


def _empty(runs):
    (runs["scratch"] / "results.json").write_bytes(b"")


def _not_a_record(runs):
    (runs["scratch"] / "results.json").write_text("[1, 2, 3]")


def _no_run_key(runs):
    path = runs["scratch"] / "results.json"
    record = json.loads(path.read_text())
    del record["run_key"]
    path.write_text(json.dumps(record))


def _duplicate(runs):  # two different runs claiming one key (an identical copy is one run: see test_analysis_io)
    copy = runs["finetune"].with_name(runs["finetune"].name + " (copy)")
    shutil.copytree(runs["finetune"], copy)
    record = json.loads((copy / "results.json").read_text())
    record["best_val_loss"] *= 1.01
    (copy / "results.json").write_text(json.dumps(record))


def _edit(field, value):
    def edit(runs):
        path = runs["finetune"] / "results.json"
        record = json.loads(path.read_text())
        record[field] = value
        path.write_text(json.dumps(record))
    return edit


RESULTS_CASES = [
    ("results_garbage_bytes", _garbage, ("results.json", "corrupt", "delete")),
    ("results_truncated", _truncated, ("results.json", "corrupt", "delete")),
    ("results_empty", _empty, ("results.json", "delete")),
    ("results_not_a_record", _not_a_record, ("results.json", "delete")),
    ("results_without_run_key", _no_run_key, ("run_key",)),
    ("duplicate_run_keys", _duplicate, ("duplicate run keys",)),
    ("mixed_tokenizers", _edit("tokenizer", "bpe512-other"), ("tokenizers", "split")),
    ("mixed_validation_sets", _edit("val_set", "python_small-other--bpe300-x"), ("validation sets",)),
]


@pytest.mark.parametrize("damage,names", [c[1:] for c in RESULTS_CASES], ids=[c[0] for c in RESULTS_CASES])
@pytest.mark.trains
@pytest.mark.subprocess
def test_results_catalog(world, tmp_path, damage, names, capsys):
    from transfer_lab.analysis import collect_local

    root, runs = _copy_sweep(world, tmp_path)
    damage(runs)
    before = snapshot(root)
    expect_user_error(lambda: collect_local(root, SWEEP), names, ResultsError, capsys)
    assert_intact(before)  # the analysis never rewrites or deletes a record it cannot read
    assert not (root / "sweeps" / SWEEP / "report").exists()


@pytest.mark.trains
@pytest.mark.subprocess
def test_metrics_cut_mid_line_is_read_up_to_the_cut(world, tmp_path):
    from transfer_lab.analysis import collect_local

    root, runs = _copy_sweep(world, tmp_path)
    metrics = runs["scratch"] / records.METRICS_FILE
    rows = records.read_metrics(runs["scratch"])
    data = metrics.read_bytes()
    metrics.write_bytes(data[: len(data) - 7])  # a kill in the middle of the last line
    assert records.read_metrics(runs["scratch"]) == rows[:-1]
    table = collect_local(root, SWEEP).table
    assert sorted(table["regime"]) == ["finetune", "scratch"] and not table["excluded"].any()


# --- 4. analysis: no runs, one N only, all D_T <= 0, NaN losses, analyze's own keys --------------

def analyze_cfg(root: Path, *overrides: str):
    return compose(f"paths.output_root={root}", "fit.n_bootstrap=10", "plots=false", "html=false", *overrides,
                   config="analyze")


def _ossified(runs):
    return [dataclasses.replace(r, best_val_loss_per_char=float(syn.scratch_loss(r.non_embedding_params,
                                                                                  r.finetune_chars)) * 1.05)
            if r.regime == "finetune" else r for r in runs]


TWO_N = dict(ns=(1e6, 1e7), extras=False)
ANALYSIS_ERRORS = [
    ("no_runs_at_all", None, [], ("no runs at all",), ResultsError),
    ("sweep_does_not_exist", syn.make_runs(**TWO_N), ["sweep=nope"], ("nope", "sweep="), ResultsError),
    ("sweep_without_runs", [], ["sweep=synth"], ("no runs at all",), ResultsError),
    ("predict_with_one_n", syn.make_runs(ns=(1e6,), extras=False),
     ["action=predict", "predict.n=1e6", "predict.finetune_chars=1e5"], ("not fitted", "distinct N"), ResultsError),
    ("predict_without_inputs", syn.make_runs(**TWO_N), ["action=predict"], ("predict.n",), ConfigError),
    ("action_unknown", syn.make_runs(**TWO_N), ["action=plot"], ("action",), ConfigError),
    ("source_unknown", syn.make_runs(**TWO_N), ["source=s3"], ("source",), ConfigError),
    ("loss_unknown", syn.make_runs(**TWO_N), ["loss=per_byte"], ("loss",), ConfigError),
    ("method_unknown", syn.make_runs(**TWO_N), ["effective_data.method=magic"], ("effective_data.method",),
     ConfigError),
]
ANALYZE_KEY_CASES = [
    ("bootstrap_negative", ["fit.n_bootstrap=-1"], ("fit.n_bootstrap",)),
    ("bootstrap_text", ["fit.n_bootstrap=many"], ("fit.n_bootstrap",)),
    ("seed_text", ["fit.seed=abc"], ("fit.seed",)),
    ("ci_above_one", ["fit.ci=2"], ("fit.ci",)),
    ("low_data_fraction_text", ["effective_data.low_data_fraction=abc"], ("effective_data.low_data_fraction",)),
    ("low_data_fraction_negative", ["effective_data.low_data_fraction=-1"], ("effective_data.low_data_fraction",)),
    ("huber_negative", ["fit.huber_delta=-1"], ("fit.huber_delta",)),
    ("predict_n_text", ["action=predict", "predict.n=big", "predict.finetune_chars=1e5"], ("predict.n",)),
    ("compare_outside_the_root", ["action=compare", "compare.sweeps=[../../elsewhere/sweeps/x,demo]"],
     ("compare.sweeps", "../../elsewhere/sweeps/x")),
    ("plan_budget_zero", ["action=plan", "plan.budget_hours=0"], ("plan.budget_hours",)),
    ("plan_budget_negative", ["action=plan", "plan.budget_hours=-2"], ("plan.budget_hours",)),
]


def _sweep_root(tmp: Path, runs) -> Path:
    root = tmp / "outputs"
    root.mkdir()
    if runs is not None:
        (root / "sweeps" / "synth" / "runs").mkdir(parents=True)
        syn.write_runs(root, "synth", runs)
    return root


@pytest.mark.parametrize("runs,overrides,names,kind", [c[1:] for c in ANALYSIS_ERRORS],
                         ids=[c[0] for c in ANALYSIS_ERRORS])
def test_analysis_error_catalog(tmp_path, runs, overrides, names, kind, capsys):
    from transfer_lab.analysis.actions import run_cli

    root = _sweep_root(tmp_path, runs)
    before = snapshot(root)
    expect_user_error(lambda: run_cli(analyze_cfg(root, *overrides)), names, kind, capsys)
    assert_intact(before)


@pytest.mark.parametrize("overrides,names", [c[1:] for c in ANALYZE_KEY_CASES], ids=[c[0] for c in ANALYZE_KEY_CASES])
def test_analyze_key_catalog(tmp_path, overrides, names, capsys):
    from transfer_lab.analysis.actions import run_cli

    root = _sweep_root(tmp_path, syn.make_runs(**TWO_N))
    before = snapshot(root)
    expect_user_error(lambda: run_cli(analyze_cfg(root, *overrides)), names, ConfigError, capsys)
    assert_intact(before)


@pytest.mark.parametrize("overrides,names", [c[1:] for c in ANALYZE_KEY_CASES], ids=[c[0] for c in ANALYZE_KEY_CASES])
def test_validate_analyze_config_catches_them(tmp_path, overrides, names, capsys):
    """The check run_cli calls first, on its own."""
    from transfer_lab.analysis.settings import read_settings as validate_analyze_config

    validate_analyze_config(analyze_cfg(tmp_path))  # the shipped defaults pass
    expect_user_error(lambda: validate_analyze_config(analyze_cfg(tmp_path, *overrides)), names, ConfigError,
                      capsys)


def _nan_losses(runs):
    return [dataclasses.replace(r, best_val_loss_per_char=float("nan"), best_val_loss=float("nan")) for r in runs]


ANALYSIS_DEGRADED = [
    # a usable report with a note that names the problem (not an error: the other fits still hold)
    ("one_n_only", syn.make_runs(ns=(1e6,), extras=False), "distinct N"),
    ("all_dt_not_positive", _ossified(syn.make_runs(**TWO_N)), "D_T ≤ 0"),
    ("all_losses_nan", _nan_losses(syn.make_runs(**TWO_N)), "no usable runs"),
    ("some_losses_nan", syn.make_runs(**TWO_N) + [syn.result("synth", "ft-nan", "finetune", 1e6, 5e4,
                                                             float("nan"))], "ft-nan"),
]


@pytest.mark.parametrize("runs,note", [c[1:] for c in ANALYSIS_DEGRADED], ids=[c[0] for c in ANALYSIS_DEGRADED])
def test_analysis_degrades_with_a_note(tmp_path, runs, note, capsys):
    from transfer_lab.analysis.actions import run_cli

    root = _sweep_root(tmp_path, runs)
    before = snapshot(root)
    run_cli(analyze_cfg(root))
    out, err = capsys.readouterr()
    report = (root / "sweeps" / "synth" / "report" / "report.md").read_text()
    assert note in out or note in report, out
    assert "Traceback" not in out + err
    assert_intact(before)


# --- 5. the real scripts, in a subprocess --------------------------------------------------------

def script(name: str, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "MPLBACKEND": "Agg", **(env_extra or {})}
    env.pop("TRANSFER_LAB_OUTPUTS", None)
    return subprocess.run([sys.executable, name, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def assert_one_line_exit_2(proc: subprocess.CompletedProcess, *names: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for name in names:
        assert name in lines[0], lines[0]
    assert FIX.search(lines[0]), lines[0]


@pytest.mark.subprocess
def test_train_script_unknown_key_and_unknown_experiment(world):
    before = snapshot(world.root)
    proc = script("train.py", "model.n_layers=3", f"paths.output_root={world.root}")
    assert_one_line_exit_2(proc, "model.n_layers", "model.n_layer")
    proc = script("train.py", "-m", "experiment=nope", f"paths.output_root={world.root}")
    assert_one_line_exit_2(proc, "experiment=nope")
    assert_intact(before)


@pytest.mark.subprocess
def test_train_script_sweep_with_a_binary_corpus(world, bad_files):
    """A multirun whose data is unusable: one line, exit 2, and the finished sweep beside it untouched."""
    before = snapshot(world.root)
    proc = script("train.py", "-m", *at_test_size([
        "regime=scratch", "data.finetune_chars=1e4,2e4", f"sweep={SWEEP}", f"data.target={bad_files / 'binary.yaml'}",
        f"paths.output_root={world.root}", f"paths.data_dir={world.data_dir}", f"paths.cache_dir={world.cache_dir}"]))
    assert_one_line_exit_2(proc, "binary.txt")
    assert_intact(before)


@pytest.mark.subprocess
def test_analyze_script_on_a_corrupt_results_file(world, tmp_path):
    root, runs = _copy_sweep(world, tmp_path)
    _truncated(runs)
    before = snapshot(root)
    proc = script("analyze.py", f"paths.output_root={root}", "fit.n_bootstrap=10")
    assert_one_line_exit_2(proc, "results.json")
    assert_intact(before)


@pytest.mark.subprocess
def test_analyze_script_unknown_key(tmp_path):
    proc = script("analyze.py", f"paths.output_root={tmp_path}", "fit.n_bootstrp=10")
    assert_one_line_exit_2(proc, "fit.n_bootstrp")


@pytest.mark.subprocess
@pytest.mark.parametrize("entry", [("train.py",), ("analyze.py",), ("-m", "transfer_lab.prepare")])
def test_unwritable_output_root_is_one_line_before_hydra_makes_a_folder(entry, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for root, words in (("/proc/nope", ("paths.output_root=/proc/nope", "not a writable folder")),
                        (str(a_file), ("is a file, not a folder",)),
                        (f"{a_file}/below", ("not a writable folder",))):
        proc = script(*entry, f"paths.output_root={root}")
        assert_one_line_exit_2(proc, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
