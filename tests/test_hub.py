"""The hub corpora through the real `datasets` streaming path, no mocks: local folders laid out like
each shipped repository (parquet shards under data/<config>/train/, a parquet export under
plain_text/partial-train/, gzipped json shards, a repository that holds a loading script), filled
with real text (the Debian fortunes packages, the interpreter's stdlib). Every shipped *_hub spec
is prepared from its folder with only the location swapped (TRANSFER_LAB_HUB_MIRROR)."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from transfer_lab.data.corpora import (
    available_corpora,
    load_corpus_spec,
    prepare_corpus,
)
from transfer_lab.errors import DataError

HUB_SPECS = sorted(n for n in available_corpora() if n.endswith("_hub"))
FORTUNES = {"en": ("fortunes", "usr/share/games/fortunes"), "de": ("fortunes-de", "usr/share/games/fortunes/de"),
            "es": ("fortunes-es", "usr/share/games/fortunes/es"), "zh": ("fortunes-zh", "usr/share/games/fortunes")}
PAGE_CHARS = 3000  # fortunes joined into web-page-sized documents


def _pages(language: str, raw_dir: Path, chars: int) -> list[str]:
    from transfer_lab.data.corpora.debian import debian_tree
    from transfer_lab.data.corpora.readers import read_fortune

    package, folder = FORTUNES[language]
    root, _ = debian_tree(package, None, raw_dir)
    pages, page, total = [], [], 0
    for path in sorted(p for p in (root / folder).rglob("*") if p.is_file() and p.suffix not in (".dat", ".u8")):
        for text in read_fortune(path.read_bytes()):
            page.append(text.strip())
            if sum(map(len, page)) > PAGE_CHARS:
                pages.append("\n\n".join(page))
                total += len(pages[-1])
                page = []
            if total >= chars:
                return pages
    return pages + (["\n\n".join(page)] if page else [])


def _python_files(chars: int) -> list[tuple[str, str]]:
    from transfer_lab.data.corpora.sources import stdlib_root

    out, total = [], 0
    for path in sorted(stdlib_root().glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        out.append((path.name, text))
        total += len(text)
        if total >= chars:
            break
    return out


def _parquet_shards(folder: Path, names: list[str], columns: dict[str, list]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(columns.values())))
    bounds = [round(i * n / len(names)) for i in range(len(names) + 1)]
    for name, lo, hi in zip(names, bounds, bounds[1:]):
        pq.write_table(pa.table({k: v[lo:hi] for k, v in columns.items()}), folder / name)


# a sample of FineWeb-2's configs in its README's order; the real one lists ~1,900, aai_Latn first
FINEWEB2_CONFIGS = ["aai_Latn", "aak_Latn", "aau_Latn", "aaz_Latn", "abk_Cyrl", "ace_Arab", "ace_Latn", "acm_Arab",
                    "afr_Latn", "als_Latn", "arb_Arab", "ces_Latn", "cmn_Hani", "dan_Latn", "deu_Latn", "ell_Grek",
                    "fas_Arab", "fin_Latn", "fra_Latn", "hun_Latn", "ita_Latn", "jpn_Jpan", "kor_Hang", "nld_Latn",
                    "pol_Latn", "por_Latn", "ron_Latn", "rus_Cyrl", "spa_Latn", "swe_Latn", "tur_Latn", "ukr_Cyrl",
                    "vie_Latn", "zul_Latn"]


def fineweb2_readme() -> str:
    """The repository card as FineWeb-2 writes it: a YAML header naming each config's test and train
    files (and the *_removed configs: what its filters dropped), then prose."""
    card = ["---", "license: odc-by", "task_categories:", "- text-generation", "pretty_name: FineWeb 2", "configs:"]
    for config in FINEWEB2_CONFIGS:
        card += [f"- config_name: {config}", "  data_files:", "  - split: test", f"    path: data/{config}/test/*",
                 "  - split: train", f"    path: data/{config}/train/*"]
    for config in FINEWEB2_CONFIGS:
        card += [f"- config_name: {config}_removed", "  data_files:", "  - split: train",
                 f"    path: data/{config}_removed/train/*"]
    return "\n".join(card + ["---", "# 🥂 FineWeb2", "", "A sparkling update with 1000s of languages.", ""])


@pytest.fixture(scope="session")
def hub_mirror(tmp_path_factory, data_dir) -> Path:
    """Folders shaped like the shipped repositories, each with ~1.2M characters of real text."""
    root = tmp_path_factory.mktemp("hub")
    raw = Path(data_dir) / "raw"
    # OpenWebText's parquet export (refs/convert/parquet): plain_text/partial-train/NNNN.parquet
    pages = _pages("en", raw, 1_200_000)
    _parquet_shards(root / "Skylion007/openwebtext/plain_text/partial-train", ["0000.parquet", "0001.parquet"],
                    {"text": pages})
    # FineWeb-2 as users copy it: the repository's README, listing every config (test and train
    # splits, aai_Latn first), beside the shards of only the languages they need
    configs = {"deu_Latn": "de", "spa_Latn": "es", "cmn_Hani": "zh"}
    fineweb = root / "HuggingFaceFW/fineweb-2"
    for config, language in configs.items():
        pages = _pages(language, raw, 1_200_000)
        _parquet_shards(fineweb / "data" / config / "train", ["000_00000.parquet", "000_00001.parquet"],
                        {"text": pages, "id": [f"<urn:{i}>" for i in range(len(pages))],
                         "language": [config] * len(pages)})
    (fineweb / "README.md").write_text(fineweb2_readme())
    # CodeParrot clean: gzipped json lines at the top of the repository, the code in `content`
    files = _python_files(1_500_000)
    parrot = root / "codeparrot/codeparrot-clean-train"
    parrot.mkdir(parents=True)
    (parrot / "README.md").write_text("# CodeParrot Dataset Cleaned (train)\n")
    for i, part in enumerate((files[::2], files[1::2]), start=1):
        with gzip.open(parrot / f"file-{i:012d}.json.gz", "wt", encoding="utf-8") as handle:
            for name, text in part:
                handle.write(json.dumps({"repo_name": "python/cpython", "path": f"Lib/{name}", "content": text,
                                         "license": "psf-2.0"}) + "\n")
    # github-code-clean: a loading script beside parquet shards of several languages
    github = root / "codeparrot/github-code-clean"
    (github / "data").mkdir(parents=True)
    (github / "github-code-clean.py").write_text("import datasets  # a loading script: datasets 5.x refuses it\n")
    code = [text for _, text in files] + ["public class A { }\n" * 40] * 20
    languages = ["Python"] * len(files) + ["Java"] * 20
    _parquet_shards(github / "data", ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"],
                    {"code": code, "repo_name": ["x/y"] * len(code), "path": ["f"] * len(code),
                     "language": languages, "license": ["mit"] * len(code), "size": [len(c) for c in code]})
    return root


@pytest.fixture
def mirrored(hub_mirror, monkeypatch):
    monkeypatch.setenv("TRANSFER_LAB_HUB_MIRROR", str(hub_mirror))
    return hub_mirror


def test_every_hub_corpus_is_shipped_and_scriptless():
    assert HUB_SPECS == ["codeparrot_python_hub", "fineweb2_de_hub", "fineweb2_es_hub", "fineweb2_zh_hub",
                         "github_code_python_hub", "openwebtext_hub"]
    for name in HUB_SPECS:  # none asks for remote code, a gate's token, or a script-based repository
        spec = load_corpus_spec(name)
        assert "trust_remote_code" not in spec["load_kwargs"] and "token" not in spec["load_kwargs"]
        assert spec["path"] not in ("Skylion007/openwebtext", "codeparrot/github-code-clean") or \
            spec["revision"] == "refs/convert/parquet" or spec["path"] == "parquet"


@pytest.mark.subprocess
@pytest.mark.parametrize("name", HUB_SPECS)
def test_each_shipped_hub_spec_prepares_from_its_repository_layout(name, mirrored, tmp_path):
    corpus = prepare_corpus(load_corpus_spec(name), data_dir=tmp_path / "data")
    (info,) = [s for s in corpus.manifest["sources"] if s.get("from") == "hub"]
    assert info["read_from"].startswith(str(mirrored)) and info["shards"] == 2
    assert corpus.train_chars > corpus.val_chars >= 300_000
    texts = list(corpus.documents("train"))
    if name == "github_code_python_hub":  # where: {language: Python} kept the Python files only
        assert not any("public class A" in t for t in texts)
    if name.startswith("fineweb2_zh"):
        assert sum(ord(c) > 0x4E00 for c in "".join(texts[:50])) > 1000


@pytest.mark.subprocess
def test_a_repository_holding_a_loading_script_is_one_line(mirrored, tmp_path):
    spec = {"name": "scripted", "kind": "hub", "path": "codeparrot/github-code-clean", "max_chars": 10**6,
            "text_field": "code"}
    with pytest.raises(DataError, match="scripted.*loading script.*datasets 5.x refuses") as err:
        prepare_corpus(spec, data_dir=tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.subprocess
def test_a_misnamed_where_field_stops_at_the_first_record(mirrored, tmp_path):
    spec = {**load_corpus_spec("github_code_python_hub"), "where": {"lang": "Python"}}
    with pytest.raises(DataError, match=r"no field 'lang' \(fields: \['code', 'language', .*fix where"):
        prepare_corpus(spec, data_dir=tmp_path)


@pytest.mark.subprocess
def test_a_corrupt_shard_names_the_corpus_and_the_shard(hub_mirror, monkeypatch, tmp_path):
    copy = tmp_path / "mirror"
    shutil.copytree(hub_mirror / "HuggingFaceFW", copy / "HuggingFaceFW")
    shard = copy / "HuggingFaceFW/fineweb-2/data/deu_Latn/train/000_00001.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a download cut short
    monkeypatch.setenv("TRANSFER_LAB_HUB_MIRROR", str(copy))
    with pytest.raises(DataError, match=r"fineweb2_de_hub.*reading shard .*000_00001\.parquet failed") as err:
        prepare_corpus(load_corpus_spec("fineweb2_de_hub"), data_dir=tmp_path / "data")
    assert "\n" not in str(err.value)


def test_offline_is_one_line_naming_the_switch(monkeypatch, tmp_path):
    monkeypatch.delenv("TRANSFER_LAB_HUB_MIRROR", raising=False)
    with pytest.raises(DataError, match="switched off; set HF_HUB_OFFLINE=0"):
        prepare_corpus(load_corpus_spec("openwebtext_hub"), data_dir=tmp_path)


@pytest.mark.subprocess
def test_check_reads_a_few_records_of_each_corpus(mirrored, capsys):
    from transfer_lab.data.corpora.__main__ import main

    with pytest.raises(SystemExit) as done:
        main(["check", "openwebtext_hub", "codeparrot_python_hub", "python_small"])
    lines = capsys.readouterr().out.splitlines()
    assert done.value.code == 0, lines
    assert lines[0].startswith("openwebtext_hub: 50 texts in") and "records/s" in lines[0] and "2 shards" in lines[0]
    assert lines[1].startswith("codeparrot_python_hub: ") and "first text" in lines[1]
    assert lines[2].startswith("python_small: embedded")


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - the http.server name
        _Recorder.seen.append(self.path)
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Repository not found"}')

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.mark.subprocess
@pytest.mark.network
def test_the_one_switch_really_goes_online(tmp_path):
    """`HF_HUB_OFFLINE=0 make check-hub` asks the hub (here a local server standing in for it);
    without the switch nothing is asked and every line names the switch."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFER_LAB_HUB"))}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        off = subprocess.run(["make", "-s", "check-hub"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=600)
        assert _Recorder.seen == [] and off.stdout.count("switched off; set HF_HUB_OFFLINE=0") == len(HUB_SPECS)
        on = subprocess.run(["make", "-s", "check-hub"], cwd=ROOT, env={**env, "HF_HUB_OFFLINE": "0"},
                            capture_output=True, text=True, timeout=600)
    finally:
        server.shutdown()
    asked = " ".join(_Recorder.seen)
    for repo in ("Skylion007/openwebtext", "HuggingFaceFW/fineweb-2", "codeparrot/codeparrot-clean-train",
                 "codeparrot/github-code-clean"):
        assert repo in asked, (repo, _Recorder.seen[:10], on.stdout[-2000:])
    lines = [line for line in on.stdout.splitlines() if line.endswith("_hub") or "_hub: " in line]
    assert len(lines) == len(HUB_SPECS) and all(": error: " in line for line in lines), on.stdout[-3000:]
    assert "switched off" not in on.stdout and "Traceback" not in on.stdout + on.stderr


# --- mirrors as users copy them ----------------------------------------------------------------------

def _partial_fineweb2(hub_mirror: Path, root: Path, configs=("deu_Latn",)) -> Path:
    """A FineWeb-2 copy holding only `configs` beside the real README (which lists them all)."""
    fineweb = root / "HuggingFaceFW/fineweb-2"
    fineweb.mkdir(parents=True)
    shutil.copy(hub_mirror / "HuggingFaceFW/fineweb-2/README.md", fineweb / "README.md")
    for config in configs:
        shutil.copytree(hub_mirror / "HuggingFaceFW/fineweb-2/data" / config, fineweb / "data" / config)
    return fineweb


@pytest.mark.subprocess  # the mirror holds real text: the Debian packages (apt-get)
def test_a_partial_fineweb2_mirror_with_the_real_readme_prepares(hub_mirror, monkeypatch, tmp_path):
    from transfer_lab.data.corpora.hub import shards

    fineweb = _partial_fineweb2(hub_mirror, tmp_path / "mirror")
    readme = (fineweb / "README.md").read_text()
    assert readme.index("config_name: aai_Latn") < readme.index("config_name: deu_Latn")
    assert not (fineweb / "data/aai_Latn").exists() and readme.count("config_name:") > 50
    monkeypatch.setenv("TRANSFER_LAB_HUB_MIRROR", str(tmp_path / "mirror"))
    reader, files, _ = shards(load_corpus_spec("fineweb2_de_hub"))
    assert reader == "parquet" and [Path(f).name for f in files] == ["000_00000.parquet", "000_00001.parquet"]
    corpus = prepare_corpus(load_corpus_spec("fineweb2_de_hub"), data_dir=tmp_path / "data")
    assert corpus.train_chars > corpus.val_chars >= 300_000
    assert any("ä" in t or "ü" in t or "ß" in t for t in corpus.documents("val"))


def _one_line(call) -> str:
    with pytest.raises(DataError) as err:
        call()
    assert "\n" not in str(err.value) and "switched off" not in str(err.value)
    return str(err.value)


@pytest.mark.subprocess  # the mirror holds real text: the Debian packages (apt-get)
def test_each_misleading_mirror_message_names_the_real_cause_and_fix(hub_mirror, monkeypatch, tmp_path):
    from transfer_lab.data.corpora.hub import shards

    mirror = tmp_path / "mirror"
    fineweb = _partial_fineweb2(hub_mirror, mirror)
    monkeypatch.setenv("TRANSFER_LAB_HUB_MIRROR", str(mirror))
    # the mirror is set, the repository is not in it: the folder it looked for, not "the hub is off"
    message = _one_line(lambda: shards(load_corpus_spec("openwebtext_hub")))
    assert f"{mirror}/Skylion007/openwebtext is not a folder; copy the repository there" in message
    message = _one_line(lambda: shards(load_corpus_spec("github_code_python_hub")))
    assert f"{mirror}/codeparrot/github-code-clean is not a folder; copy the repository there" in message
    # the repository is there, its data files are not: the pattern that matched nothing, not "set split"
    (mirror / "codeparrot/github-code-clean/data").mkdir(parents=True)
    message = _one_line(lambda: shards(load_corpus_spec("github_code_python_hub")))
    pattern = f"{mirror}/codeparrot/github-code-clean/data/train-*.parquet"
    assert f"{pattern} matches nothing; copy its shards there" in message
    assert "set split" not in message
    # an empty train/ of the config: which files are missing
    shutil.rmtree(fineweb / "data/deu_Latn/train")
    (fineweb / "data/deu_Latn/train").mkdir()
    message = _one_line(lambda: shards(load_corpus_spec("fineweb2_de_hub")))
    assert "no files for config 'deu_Latn', split 'train'" in message
    assert "data/deu_Latn/train/* matches nothing" in message
    assert "set split" not in message
    # no README: the copy cannot say where a config's files are
    (fineweb / "README.md").unlink()
    message = _one_line(lambda: shards(load_corpus_spec("fineweb2_de_hub")))
    assert "has no README.md" in message and "copy the repository's README.md" in message
    (fineweb / "README.md").write_text("# FineWeb-2, a README written by hand\n")
    message = _one_line(lambda: shards(load_corpus_spec("fineweb2_de_hub")))
    assert "names no configs" in message and "copy the repository's own README.md" in message
    # a config the README does not list, a split it does not have
    (fineweb / "README.md").write_text(fineweb2_readme())
    message = _one_line(lambda: shards({**load_corpus_spec("fineweb2_de_hub"), "config_name": "deu_latn"}))
    assert "config_name 'deu_latn' is not among the" in message and "aai_Latn" in message
    assert "fix config_name" in message
    message = _one_line(lambda: shards({**load_corpus_spec("fineweb2_de_hub"), "split": "validation"}))
    assert "no split 'validation'" in message and "set split in the corpus spec" in message


@pytest.mark.subprocess
def test_a_corrupt_shard_is_exactly_one_line(hub_mirror, tmp_path):
    """Through the real command: `datasets` logs a shard it cannot read twice before it raises."""
    fineweb = _partial_fineweb2(hub_mirror, tmp_path / "mirror")
    shard = fineweb / "data/deu_Latn/train/000_00001.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    env = {**os.environ, "TRANSFER_LAB_HUB_MIRROR": str(tmp_path / "mirror"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "transfer_lab.data.corpora", "prepare", "fineweb2_de_hub",
                           "--data-dir", str(tmp_path / "data")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if not line.startswith("INFO ")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: hub corpus 'fineweb2_de_hub'") and "000_00001.parquet" in lines[0]


@pytest.mark.subprocess  # the mirror holds real text: the Debian packages (apt-get)
def test_the_shard_check_opens_every_shard_and_finds_a_corrupt_last_one(hub_mirror, monkeypatch, tmp_path, capsys):
    from transfer_lab.data.corpora.__main__ import main

    fineweb = _partial_fineweb2(hub_mirror, tmp_path / "mirror")
    monkeypatch.setenv("TRANSFER_LAB_HUB_MIRROR", str(tmp_path / "mirror"))
    parrot = "codeparrot/codeparrot-clean-train"
    shutil.copytree(hub_mirror / parrot, tmp_path / "mirror" / parrot)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in (fineweb / "data/deu_Latn/train").iterdir())
    with pytest.raises(SystemExit) as done:
        main(["check", "--shards", "fineweb2_de_hub", "codeparrot_python_hub"])
    lines = capsys.readouterr().out.splitlines()
    assert done.value.code == 0, lines
    assert lines[0].startswith("fineweb2_de_hub: 2 shards opened (2 by parquet footer, ")
    assert f"{rows:,} records" in lines[0]
    assert "no data read" in lines[0] and "2 by gzip header and first record" in lines[1]

    last = fineweb / "data/deu_Latn/train/000_00001.parquet"  # the last shard, cut short
    last.write_bytes(last.read_bytes()[: last.stat().st_size - 100])
    with pytest.raises(SystemExit) as done:
        main(["check", "fineweb2_de_hub"])  # 50 records come from the first shard: the cut passes
    assert done.value.code == 0 and "50 texts" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["check", "--shards", "fineweb2_de_hub"])
    (line,) = capsys.readouterr().out.splitlines()
    assert done.value.code == 2 and line.startswith("fineweb2_de_hub: error: ")
    assert "000_00001.parquet does not open (parquet footer: " in line and "download the shard again" in line
