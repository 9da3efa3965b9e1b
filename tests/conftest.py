"""Shared test set-up: offline everything, real (small) corpora, the real config shrunk to CPU size."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"

# A CPU-sized transfer study on real text: fortunes (English) → a few stdlib modules (Python).
# 1 layer × 32 wide ≈ 13k non-embedding params; 8 × 64 = 512 tokens per step. Runs early-stop
# for real (plateau rule, two anneals) in ~200-300 steps, a few seconds: a fixed 3-validation
# plateau window and the scratch LR for fine-tunes (the 1e4-token pre-training teaches little).
TINY = [
    "data.source=fortunes_en", "data.target=python_small", "data.val_tokens=2048",
    "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.n_ctx=64",
    "tokenizer.vocab_size=300", "tokenizer.train_chars=2e5",
    "optim.batch_size=8", "optim.val_batch_size=32", "optim.max_steps=600", "optim.val_every_n_steps=10", "optim.lr=3e-3",
    "optim.warmup_steps=5", "optim.patience=3", "optim.patience_fraction=0", "finetune.lr=3e-3",
    "pretrain.tokens=1e4", "trainer.log_every_n_steps=5", "data.finetune_chars=1e4",
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Raw downloads and prepared corpora, shared by every test (set TRANSFER_LAB_TEST_DATA to keep them)."""
    shared = os.environ.get("TRANSFER_LAB_TEST_DATA")
    return Path(shared) if shared else tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Tokenizers and token files, shared by the tests of one session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def corpora_cache(tmp_path_factory) -> Path:
    """The raw downloads of the corpus tests (tests/test_corpora.py), each of which prepares into a
    fresh data dir linked to it: builds are fresh, downloads are not. TRANSFER_LAB_TEST_DATA keeps them."""
    base = os.environ.get("TRANSFER_LAB_TEST_DATA")
    root = Path(base) if base else tmp_path_factory.mktemp("corpora-cache")
    (root / "raw").mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def fortune_texts(corpora_cache) -> dict[str, list[str]]:
    """Real fortunes by language: {'en': [...], 'de': [...]} (cleaned, one per item)."""
    from transfer_lab.data.corpora.clean import normalise_text
    from transfer_lab.data.corpora.debian import debian_tree
    from transfer_lab.data.corpora.readers import read_fortune

    out = {}
    for lang, package, rel in (("en", "fortunes", "usr/share/games/fortunes/computers"),
                               ("de", "fortunes-de", "usr/share/games/fortunes/de/zitate")):
        root, _ = debian_tree(package, None, corpora_cache / "raw")
        texts = [normalise_text(t) for t in read_fortune((root / rel).read_bytes())]
        out[lang] = [t for t in texts if t and "\n\n" not in t]
    return out


@pytest.fixture()
def compose_cfg(tmp_path, data_dir, cache_dir):
    """Compose conf/train.yaml as train.py would, shrunk by TINY, writing under tmp_path."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def _compose(*overrides: str, tiny: bool = True):
        GlobalHydra.instance().clear()
        paths = [f"paths.output_root={tmp_path}/outputs", f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=(TINY if tiny else []) + paths + list(overrides))

    return _compose


# --- The fast tier stays fast: a test that trains a model or starts a process must say so ---------------
# (`trains`, `subprocess` markers, pyproject.toml). Unmarked, it fails at the first Trainer.fit or Popen,
# naming the marker to add, so `make test-fast` (-m "not trains and not subprocess and not network")
# never trains or spawns behind its back. Session fixtures count for the test that first builds them.
CURRENT_MARKS: set[str] = set()
CHEAP_COMMANDS = {"git"}  # a millisecond lookup (the commit a predictions file is stamped with), no tier


def pytest_runtest_setup(item):
    CURRENT_MARKS.clear()
    CURRENT_MARKS.update(m.name for m in item.iter_markers())


def _require(marker: str, what: str) -> None:
    if marker not in CURRENT_MARKS:
        raise RuntimeError(f"this test {what} but is not marked @pytest.mark.{marker} (tests/conftest.py); mark it")


def _guard_popen() -> None:
    import subprocess

    original = subprocess.Popen.__init__

    def init(self, args, *a, **kw):
        program = args if isinstance(args, (str, bytes)) else (list(args)[:1] or [""])[0]
        name = Path(str(program).split()[0] if isinstance(program, str) else str(program)).name
        if name not in CHEAP_COMMANDS and "trains" not in CURRENT_MARKS:  # training prepares data (apt-get, dpkg-deb)
            _require("subprocess", f"starts a process ({program})")
        original(self, args, *a, **kw)

    subprocess.Popen.__init__ = init


class _PatchTrainerFit:
    """Wrap pytorch_lightning's Trainer.fit once the module is first imported (a meta-path hook: the
    import itself costs ~8 s, which the fast tier must not pay just to install a guard)."""

    NAME = "pytorch_lightning.trainer.trainer"

    def find_spec(self, fullname, path, target=None):
        if fullname != self.NAME:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            fit = module.Trainer.fit

            def guarded(self, *a, **kw):
                _require("trains", "trains a model (Trainer.fit)")
                return fit(self, *a, **kw)

            module.Trainer.fit = guarded

        spec.loader.exec_module = exec_module
        return spec


_guard_popen()
sys.meta_path.insert(0, _PatchTrainerFit())
