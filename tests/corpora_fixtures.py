"""Fixtures for tests/test_corpora.py: real text fetched at test time, never committed.

The raw download cache is `$TRANSFER_LAB_TEST_DATA/raw` when that variable is set (shared
with the other test modules), else a session temp folder. Each test prepares into its own
data dir whose `raw/` links to the shared cache, so builds are fresh but downloads are not.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def corpora_cache(tmp_path_factory) -> Path:
    base = os.environ.get("TRANSFER_LAB_TEST_DATA")
    root = Path(base) if base else tmp_path_factory.mktemp("corpora-cache")
    (root / "raw").mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def data_dir(tmp_path, corpora_cache) -> Path:
    """A fresh data dir sharing the raw download cache."""
    path = tmp_path / "data"
    path.mkdir()
    (path / "raw").symlink_to(corpora_cache / "raw", target_is_directory=True)
    return path


def fortunes_spec(name: str = "fx", files=("art", "computers", "cookie"), **extra) -> dict:
    """A small real English corpus: a few files of the Debian `fortunes` package."""
    spec = {"name": name, "kind": "embedded", "language": "en", "val_chars": 5000,
            "sources": [{"name": "fortunes", "from": "debian", "package": "fortunes",
                         "reader": "fortune",
                         "include": [f"usr/share/games/fortunes/{f}" for f in files]}]}
    spec.update(extra)
    return spec


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
