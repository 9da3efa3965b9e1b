"""Corpus preparation on real text (Debian fortunes, stdlib modules), built at test time."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from transfer_lab.data.corpora import (
    PreparedCorpus,
    available_corpora,
    load_corpus_spec,
    prepare_corpus,
)
from transfer_lab.data.corpora import build as corpus_build
from transfer_lab.data.corpora.clean import cut_document
from transfer_lab.data.corpora.readers import html_to_text, read_tagged_zh, strip_roff
from transfer_lab.data.corpora.sources import glob_regex
from transfer_lab.errors import ConfigError, DataError

SHIPPED = ["english", "python", "german", "spanish", "chinese", "fortunes_en", "fortunes_de",
           "fortunes_es", "fortunes_zh", "python_small", "openwebtext_hub", "fineweb2_de_hub",
           "fineweb2_es_hub", "fineweb2_zh_hub", "codeparrot_python_hub", "github_code_python_hub"]


@pytest.fixture
def data_dir(tmp_path, corpora_cache) -> Path:
    """A fresh data dir per test (not conftest's shared one) whose raw/ links to the shared downloads."""
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


# ---------------------------------------------------------------- specs
def test_shipped_specs_load_and_unknown_name_lists_them():
    names = available_corpora()
    assert set(SHIPPED) <= set(names)
    for name in names:
        spec = load_corpus_spec(name)
        assert spec["name"] == name and load_corpus_spec(spec) == spec  # idempotent
    with pytest.raises(ConfigError, match="unknown corpus 'klingon'.*english.*path"):
        load_corpus_spec("klingon")


def test_spec_from_path_and_bad_keys(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("kind: files\npaths: [a.txt]\nlanguage: de\n", encoding="utf-8")
    spec = load_corpus_spec(path)
    assert spec["name"] == "mine" and spec["lang_filter"] is True and spec["val_chars"] > 0
    with pytest.raises(ConfigError, match="unknown keys"):
        load_corpus_spec({"name": "x", "kind": "files", "paths": ["a"], "max_chracters": 5})
    with pytest.raises(ConfigError, match="max_chars"):
        load_corpus_spec({"name": "h", "kind": "hub", "path": "a/b"})
    with pytest.raises(ConfigError, match="trust_remote_code"):
        load_corpus_spec({"name": "h", "kind": "hub", "path": "a/b", "max_chars": 10**6,
                          "load_kwargs": {"trust_remote_code": True}})


# ---------------------------------------------------------------- helpers
def test_helpers_html_cut_glob_roff_tagged():
    html = ("<html><head><title>T</title><style>p{}</style></head><body><h1>Head</h1>"
            "<p>One  two\nthree &amp; four.</p><script>var x=1;</script><p>Five</p></body>")
    assert html_to_text(html) == "Head\n\nOne two three & four.\n\nFive"
    text = "\n\n".join(f"paragraph {i} " + "x" * (i * 7 % 90) for i in range(300))
    pieces = cut_document(text, 500)
    assert "".join(pieces) == text and max(map(len, pieces)) <= 500
    rx = glob_regex("a/**/*.rst.txt")
    assert rx.match("a/b.rst.txt") and rx.match("a/x/y/b.rst.txt") and not rx.match("b.rst.txt")
    assert not glob_regex("a/*.txt").match("a/x/b.txt")
    roff = strip_roff('.TH X 1\n.SH NAME\n.B "Bold text"\n\\fBhere\\fR \\- done\n.\\" note\n')
    assert roff.split() == ["NAME", "Bold", "text", "here", "-", "done"]
    tagged = "[中央/n 电台/n]nt  发表/v  ，/w".encode()
    assert read_tagged_zh(tagged) == ["中央电台发表，"]


# ---------------------------------------------------------------- embedded, real text
@pytest.mark.subprocess
def test_split_is_deterministic_disjoint_and_shuffled(tmp_path, corpora_cache):
    spec = fortunes_spec()
    built = []
    for sub in ("a", "b"):
        d = tmp_path / sub
        d.mkdir()
        (d / "raw").symlink_to(corpora_cache / "raw", target_is_directory=True)
        built.append(prepare_corpus(spec, data_dir=d))
    a, b = built
    assert isinstance(a, PreparedCorpus) and a.directory != b.directory
    assert a.content_hash == b.content_hash
    assert list(a.documents("train")) == list(b.documents("train"))
    train, val = list(a.documents("train")), list(a.documents("val"))
    assert not set(train) & set(val)
    assert a.val_chars >= 5000 and a.val_chars == sum(map(len, val))
    assert a.train_docs == len(train) and a.train_chars == sum(map(len, train))
    assert a.directory.name.startswith("fx-") and len(a.directory.name) == len("fx-") + 8
    # stored order is a seeded shuffle, not source order; another seed gives another order
    other = prepare_corpus({**spec, "seed": 1}, data_dir=tmp_path / "a")
    assert list(other.documents("train")) != train
    assert sorted(other.documents("train")) + sorted(other.documents("val")) != []
    assert set(other.documents("train")) | set(other.documents("val")) == set(train) | set(val)


@pytest.mark.subprocess
def test_max_chars_caps_and_keeps_validation(data_dir):
    full = prepare_corpus(fortunes_spec(), data_dir=data_dir)
    capped = prepare_corpus(fortunes_spec(max_chars=20_000), data_dir=data_dir)
    assert capped.train_chars + capped.val_chars == 20_000
    assert list(capped.documents("val")) == list(full.documents("val"))
    train_full = list(full.documents("train"))
    train_capped = list(capped.documents("train"))
    assert train_capped[:-1] == train_full[:len(train_capped) - 1]  # a prefix: nested subsets


@pytest.mark.subprocess
def test_reuse_does_not_rebuild(data_dir, monkeypatch):
    first = prepare_corpus(fortunes_spec(), data_dir=data_dir)
    stamp = (first.directory / "manifest.json").stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a prepared corpus")

    monkeypatch.setattr(corpus_build, "build", no_build)
    again = prepare_corpus(fortunes_spec(), data_dir=data_dir)
    assert again.manifest == first.manifest
    assert (first.directory / "manifest.json").stat().st_mtime_ns == stamp


@pytest.mark.subprocess
def test_tampered_folder_is_an_error_not_a_rebuild(data_dir):
    pc = prepare_corpus(fortunes_spec(), data_dir=data_dir)
    train = pc.directory / "train.jsonl"
    original = train.read_bytes()
    train.write_bytes(original[: len(original) // 2])
    with pytest.raises(DataError, match=f"{pc.directory.name}.*delete"):
        prepare_corpus(fortunes_spec(), data_dir=data_dir)
    train.write_bytes(original)
    manifest = json.loads((pc.directory / "manifest.json").read_text())
    manifest["content_hash"] = "0" * 64
    (pc.directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="does not match its manifest"):
        prepare_corpus(fortunes_spec(), data_dir=data_dir)
    (pc.directory / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="broken manifest.json"):
        prepare_corpus(fortunes_spec(), data_dir=data_dir)


@pytest.mark.subprocess
def test_stale_temp_folder_from_a_killed_build_is_ignored(data_dir):
    spec = load_corpus_spec(fortunes_spec())
    stale = data_dir / "prepared" / f".tmp-{corpus_build.folder_name(spec)}-999-1"
    stale.mkdir(parents=True)
    (stale / "train.jsonl").write_text('{"text": "half"}\n')
    pc = prepare_corpus(spec, data_dir=data_dir)
    assert not stale.exists() and "half" not in set(pc.documents("train"))


def _prepare_in_process(args):
    spec, data_dir = args
    pc = prepare_corpus(spec, data_dir=Path(data_dir))
    return pc.manifest["built_at"], pc.manifest["build_seconds"], pc.content_hash


@pytest.mark.subprocess
def test_concurrent_prepare_builds_once(data_dir, monkeypatch):
    calls = []
    real_build = corpus_build.build

    def slow_build(*args, **kwargs):
        calls.append(1)
        time.sleep(0.5)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(corpus_build, "build", slow_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        prepare_corpus(fortunes_spec("ct"), data_dir=data_dir).content_hash)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 3 and len(set(results)) == 1
    # two processes: same manifest (one build), one folder, no temp folder left over
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        out = pool.map(_prepare_in_process, [(fortunes_spec("cp"), str(data_dir))] * 2)
    assert out[0] == out[1]
    folders = sorted(p.name for p in (data_dir / "prepared").iterdir() if p.is_dir())
    assert len(folders) == 2 and not any(name.startswith(".tmp") for name in folders)


def test_python_small_keeps_code_intact(data_dir):
    spec = {"name": "code1", "kind": "embedded", "language": "code", "dedup": "document",
            "val_chars": 2000, "max_doc_chars": 4000,
            "sources": [{"name": "stdlib", "from": "stdlib", "reader": "python",
                         "include": ["textwrap.py", "bisect.py"]}]}
    pc = prepare_corpus(spec, data_dir=data_dir)
    from transfer_lab.data.corpora.sources import stdlib_root
    docs = list(pc.documents("train")) + list(pc.documents("val"))
    original = (stdlib_root() / "bisect.py").read_text(encoding="utf-8")
    pieces = [d for d in docs if d in original]
    assert "".join(sorted(pieces, key=original.index)) == original
    assert max(map(len, docs)) <= 4000 and not pc.manifest["spec"]["lang_filter"]


# ---------------------------------------------------------------- files kind
@pytest.mark.subprocess
def test_files_txt_and_jsonl(tmp_path, data_dir, fortune_texts):
    en = fortune_texts["en"][:200]
    for i in range(4):
        (tmp_path / f"part{i}.txt").write_text("\n\n".join(en[i::4]), encoding="utf-8")
    spec = {"name": "ftxt", "kind": "files", "paths": [str(tmp_path / "part*.txt")],
            "language": "en", "val_chars": 1000, "sample_by": "paragraph"}
    pc = prepare_corpus(spec, data_dir=data_dir)
    assert pc.train_docs + pc.val_docs > 150 and pc.manifest["sources"][0]["format"] == "text"
    with (tmp_path / "d.jsonl").open("w", encoding="utf-8") as handle:
        for text in en:
            handle.write(json.dumps({"body": text, "id": 1}) + "\n")
    spec = {"name": "fjson", "kind": "files", "paths": [str(tmp_path / "d.jsonl")],
            "text_field": "body", "val_chars": 1000, "dedup": "document"}
    pc = prepare_corpus(spec, data_dir=data_dir)
    assert sorted(list(pc.documents("train")) + list(pc.documents("val"))) == sorted(set(en))
    bad = {**spec, "name": "fjson2", "text_field": "missing"}
    with pytest.raises(DataError, match="no field 'missing'"):
        prepare_corpus(bad, data_dir=data_dir)
    # edited source files are noticed when the prepared folder is reused
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "changed"}) + "\n")
    with pytest.raises(DataError, match="source files changed"):
        prepare_corpus(spec, data_dir=data_dir)


def test_files_errors(tmp_path, data_dir):
    base = {"kind": "files", "val_chars": 10}
    with pytest.raises(DataError, match=r"nowhere/\*\.txt.*matches no files"):
        prepare_corpus({**base, "name": "g", "paths": [str(tmp_path / "nowhere/*.txt")]},
                       data_dir=data_dir)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("".join(f"{i}: Größe und Übermaß, señor.\n" for i in range(50))
                      .encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt is not valid UTF-8.*convert"):
        prepare_corpus({**base, "name": "u", "paths": [str(latin)]}, data_dir=data_dir)
    pc = prepare_corpus({**base, "name": "u2", "paths": [str(latin)],
                         "encoding_errors": "replace", "sample_by": "line"}, data_dir=data_dir)
    assert "\ufffd" in next(pc.documents("val"))
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(DataError, match="blob.txt looks binary"):
        prepare_corpus({**base, "name": "b", "paths": [str(binary)]}, data_dir=data_dir)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty after cleaning"):
        prepare_corpus({**base, "name": "e", "paths": [str(empty)]}, data_dir=data_dir)
    built = [p.name.split("-")[0] for p in (data_dir / "prepared").iterdir()
             if not p.name.endswith(".lock")]
    assert built == ["u2"]  # failed builds leave no folder, not even a temp one


@pytest.mark.subprocess
def test_language_filter_drops_english_from_german(tmp_path, data_dir, fortune_texts):
    german = [t for t in fortune_texts["de"] if len(t.split()) >= 12][:30]
    english = [t for t in fortune_texts["en"] if len(t.split()) >= 12][:3]
    doc = german[:10] + [english[0]] + german[10:20] + [english[1]] + german[20:] + [english[2]]
    (tmp_path / "de.txt").write_text("\n\n".join(doc), encoding="utf-8")
    spec = {"name": "de1", "kind": "files", "paths": [str(tmp_path / "de.txt")],
            "language": "de", "val_chars": 100, "max_doc_chars": 2000}
    pc = prepare_corpus(spec, data_dir=data_dir)
    kept = "\n\n".join(list(pc.documents("train")) + list(pc.documents("val")))
    assert not any(e in kept for e in english)
    assert sum(g in kept for g in german) >= 27
    off = prepare_corpus({**spec, "name": "de2", "lang_filter": False}, data_dir=data_dir)
    kept = "\n\n".join(list(off.documents("train")) + list(off.documents("val")))
    assert all(e in kept for e in english)


@pytest.mark.subprocess
def test_dedup_removes_repeated_paragraphs(tmp_path, data_dir, fortune_texts):
    en = [t for t in fortune_texts["en"] if len(t.split()) >= 8]
    repeated = en[0]
    for i in range(5):
        (tmp_path / f"doc{i}.txt").write_text(
            "\n\n".join([en[10 + 3 * i], repeated, en[11 + 3 * i], en[12 + 3 * i]]),
            encoding="utf-8")
    spec = {"name": "dd", "kind": "files", "paths": [str(tmp_path / "doc*.txt")],
            "language": "en", "val_chars": 100}
    pc = prepare_corpus(spec, data_dir=data_dir)
    kept = "\n\n".join(list(pc.documents("train")) + list(pc.documents("val")))
    assert kept.count(repeated) == 1 and pc.manifest["dedup_dropped_chars"] == 4 * len(repeated)
    off = prepare_corpus({**spec, "name": "dd2", "dedup": "none"}, data_dir=data_dir)
    kept = "\n\n".join(list(off.documents("train")) + list(off.documents("val")))
    assert kept.count(repeated) == 5


# hub corpora: tests/test_hub.py (the real datasets streaming path on hub-shaped folders)
