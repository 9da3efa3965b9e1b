"""CLI: python -m transfer_lab.data.corpora {list | prepare NAME... } [--data-dir outputs/data]."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from transfer_lab.data.corpora.build import folder_name, open_prepared, prepare_corpus
from transfer_lab.data.corpora.spec import available_corpora, load_corpus_spec
from transfer_lab.errors import UserError, exit_with


def _list(data_dir: Path) -> None:
    print(f"{'name':<20} {'kind':<9} {'lang':<5} {'train chars':>13} {'docs':>7} "
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
        print(f"{name:<20} {spec['kind']:<9} {str(spec['language']):<5} {sizes}")


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m transfer_lab.data.corpora")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="shipped corpora and their prepared sizes")
    prep = sub.add_parser("prepare", help="build (or check and reuse) prepared corpora")
    prep.add_argument("names", nargs="+", help="corpus names or paths to corpus .yaml files")
    prep.add_argument("--workers", type=int, default=None)
    for p in (listing, prep):
        p.add_argument("--data-dir", type=Path, default=Path("outputs/data"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "list":
            _list(args.data_dir)
        else:
            _prepare(args.names, args.data_dir, args.workers)
    except UserError as err:
        exit_with(err)


if __name__ == "__main__":
    main()
