"""Shared test set-up: offline everything, real (small) corpora, the real config shrunk to CPU size."""

from __future__ import annotations

import os
import subprocess
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

# Every test composes the real config (conf/train.yaml) at test size: the experiment below, a CPU-sized
# transfer study on real text (fortunes → a few stdlib modules) whose runs early-stop for real in a few
# seconds. Command lines (run_helpers.train_command) and in-process composes take it from one rule.
TEST_SIZE = "experiment=tiny_test"  # conf/experiment/tiny_test.yaml


def at_test_size(overrides) -> list[str]:
    """The overrides on the test-size experiment. A list that names its own experiment keeps it, at
    that experiment's size: Hydra takes one value per group, and such a test is about that experiment."""
    overrides = list(overrides)
    if any(line.partition("=")[0].lstrip("+~") == "experiment" for line in overrides):
        return overrides
    return [TEST_SIZE, *overrides]


def compose(*overrides: str, config: str = "train", test_size: bool = True, hydra: bool = False):
    """conf/<config>.yaml composed as its script would: train at test size (test_size=False: the
    shipped default experiment), analyze as it is. hydra=True keeps the hydra node (sweeper params)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    lines = at_test_size(overrides) if config == "train" and test_size else list(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config, overrides=lines, return_hydra_config=hydra)


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
    """compose() of train.yaml writing under tmp_path, with the session's data and cache."""

    def _compose(*overrides: str, test_size: bool = True):
        paths = [f"paths.output_root={tmp_path}/outputs", f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}"]
        return compose(*paths, *overrides, test_size=test_size)

    return _compose


# --- The fast tier stays fast: a test that trains a model or starts a process must say so ---------------
# (`trains`, `subprocess` markers, pyproject.toml). Unmarked, it fails at the first Trainer.fit or Popen,
# naming the marker to add, so `make test-fast` (-m "not trains and not subprocess and not network")
# never trains or spawns behind its back. Session fixtures count for the test that first builds them.
CURRENT_MARKS: set[str] = set()
CHEAP_COMMANDS = {"git"}  # a millisecond lookup (the commit a predictions file is stamped with), no tier


IN_TEST = False  # outside a test (pytest-xdist starting its workers) nothing is guarded


def pytest_runtest_setup(item):
    CURRENT_MARKS.clear()
    CURRENT_MARKS.update(m.name for m in item.iter_markers())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global IN_TEST
    IN_TEST = True
    try:
        yield
    finally:
        IN_TEST = False


def _require(marker: str, what: str) -> None:
    if marker not in CURRENT_MARKS:
        raise RuntimeError(f"this test {what} but is not marked @pytest.mark.{marker} (tests/conftest.py); mark it")


def _guard_popen() -> None:
    import subprocess

    original = subprocess.Popen.__init__

    def init(self, args, *a, **kw):
        program = args if isinstance(args, (str, bytes)) else (list(args)[:1] or [""])[0]
        name = Path(str(program).split()[0] if isinstance(program, str) else str(program)).name
        if IN_TEST and name not in CHEAP_COMMANDS and "trains" not in CURRENT_MARKS:  # training prepares data
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


# --- a disk that fills up: a real tmpfs (root only) ----------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
                handle.flush()
        except OSError:
            pass
    return filler
