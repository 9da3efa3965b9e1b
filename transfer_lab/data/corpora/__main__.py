"""CLI: python -m transfer_lab.data.corpora {list | prepare NAME... | check [--shards] NAME... | check --hub}

  list      the shipped corpora and their prepared sizes
  prepare   build (or check and reuse) prepared corpora
  check     open each corpus' stream (hub datasets, your own files), read a few records, and print
            one line per corpus: records/s and the first text's length, or the one-line reason it
            cannot be read (`make check-hub` checks every *_hub corpus; the hub needs HF_HUB_OFFLINE=0)
  check --shards  open every shard instead, at its parquet footer or gzip header / first record, reading
            no data: a corrupt later shard is found now, not hours into preparation (`make check-hub-shards`)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from transfer_lab.data.corpora.build import folder_name, open_prepared, prepare_corpus
from transfer_lab.data.corpora.files import files_items
from transfer_lab.data.corpora.hub import hub_items
from transfer_lab.data.corpora.shard_check import check_corpus_shards
from transfer_lab.data.corpora.spec import available_corpora, load_corpus_spec
from transfer_lab.errors import UserError, exit_with

CHECK_RECORDS = 50  # texts read per corpus by `check`
CHECK_SECONDS = 60.0  # ... or this long, whichever comes first


def _list(data_dir: Path) -> None:
    print(f"{'name':<24} {'kind':<9} {'lang':<5} {'train chars':>13} {'docs':>7} "
          f"{'val chars':>11} {'docs':>6}")
    for name in available_corpora():
        spec = load_corpus_spec(name)
        folder = data_dir / "prepared" / folder_name(spec)
        sizes = "(not prepared)"
        if folder.is_dir():
            try:
                pc = open_prepared(folder, spec)
                sizes = (f"{pc.train_chars:>13,} {pc.train_docs:>7,} {pc.val_chars:>11,} "
                         f"{pc.val_docs:>6,}")
            except UserError as err:
                sizes = f"(broken: {err})"
        print(f"{name:<24} {spec['kind']:<9} {str(spec['language']):<5} {sizes}")


def _prepare(names: list[str], data_dir: Path, workers: int | None) -> None:
    for name in names:
        start = time.time()
        pc = prepare_corpus(name, data_dir=data_dir, workers=workers)
        took = time.time() - start
        print(f"{pc.name}: train {pc.train_chars:,} chars / {pc.train_docs:,} docs, "
              f"val {pc.val_chars:,} chars / {pc.val_docs:,} docs, "
              f"built in {pc.manifest['build_seconds']:.1f}s, this call {took:.1f}s -> "
              f"{pc.directory}", flush=True)
        for src in pc.manifest["sources"]:
            if "skipped" in src:
                print(f"  skipped {src['name']}: {src['skipped']}")


def check(name: str, every_shard: bool = False) -> str:
    """One line: how fast the corpus' stream reads, and its first text (or, with `every_shard`,
    every shard opened at its footer or head); UserError if it cannot."""
    spec = load_corpus_spec(name)
    if spec["kind"] == "embedded":
        return f"{spec['name']}: embedded (built from packages by `make data`), no stream to check"
    if every_shard:
        return check_corpus_shards(spec)
    started = time.perf_counter()
    items, infos = hub_items(spec) if spec["kind"] == "hub" else files_items(spec)
    first, count = None, 0
    for item in items:
        first = first if first is not None else item[3]
        count += 1
        if count >= CHECK_RECORDS or time.perf_counter() - started > CHECK_SECONDS:
            break
    seconds = time.perf_counter() - started
    if first is None:
        return f"{spec['name']}: opened, but no record passed text_field / where in {seconds:.1f} s"
    where = infos[0].get("read_from", "files") if infos else ""
    shards = f", {infos[0]['shards']} shards" if infos and "shards" in infos[0] else ""
    return (f"{spec['name']}: {count} texts in {seconds:.1f} s ({count / seconds:.1f} records/s), "
            f"first text {len(first):,} chars [{where}{shards}]")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m transfer_lab.data.corpora")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="shipped corpora and their prepared sizes")
    prep = sub.add_parser("prepare", help="build (or check and reuse) prepared corpora")
    prep.add_argument("names", nargs="+", help="corpus names or paths to corpus .yaml files")
    prep.add_argument("--workers", type=int, default=None)
    checking = sub.add_parser("check", help="open each corpus' stream and read a few records")
    checking.add_argument("names", nargs="*", help="corpus names or paths to corpus .yaml files")
    checking.add_argument("--hub", action="store_true", help="every shipped *_hub corpus")
    checking.add_argument("--shards", action="store_true",
                          help="open every shard at its footer or first record (no data read), not 50 records")
    for p in (listing, prep):
        p.add_argument("--data-dir", type=Path, default=Path("outputs/data"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "list":
            _list(args.data_dir)
        elif args.command == "prepare":
            _prepare(args.names, args.data_dir, args.workers)
        else:
            names = args.names + ([n for n in available_corpora() if n.endswith("_hub")] if args.hub else [])
            if not names:
                parser.error("check: name corpora, or --hub for every shipped hub corpus")
            failed = 0
            for name in names:
                try:
                    print(check(name, args.shards), flush=True)
                except UserError as err:
                    failed += 1
                    print(f"{name}: error: {' '.join(str(err).split())}", flush=True)
            sys.exit(2 if failed else 0)
    except UserError as err:
        exit_with(err)


if __name__ == "__main__":
    main()
