"""Cleaning: normalise text, split paragraphs, language filter, exact de-duplication, cutting.

`clean_item` runs in worker processes (read + normalise + language filter of one raw file);
`Deduper` and `cut_document` run in the parent, in source order, so the result does not
depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Any

from transfer_lab.data.corpora.langfilter import filter_paragraphs
from transfer_lab.data.corpora.readers import read_file

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
OVERSTRIKE = re.compile(r".\x08")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b\ufeff\ufffe]")
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")


def normalise_text(text: str, code: bool = False) -> str:
    """Newlines to \\n, no ANSI colours / overstrikes / control characters, NFC."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = OVERSTRIKE.sub("", ANSI.sub("", text))
    text = CONTROL.sub("", text.replace("\f", "\n"))
    if code:
        return text.rstrip() + "\n" if text.strip() else ""
    text = unicodedata.normalize("NFC", text)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def split_paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in PARAGRAPH_BREAK.split(text) if p.strip()]


def clean_text(text: str, spec: dict[str, Any]) -> list[str]:
    """One raw document -> its kept paragraphs (code: the whole document as one piece)."""
    code = spec["language"] == "code"
    text = normalise_text(text, code=code)
    if not text:
        return []
    if code or spec["dedup"] == "document" and not spec["lang_filter"]:
        return [text]
    paragraphs = split_paragraphs(text)
    if spec["lang_filter"]:
        flags = filter_paragraphs(paragraphs, spec["language"])
        paragraphs = [p for p, keep in zip(paragraphs, flags) if keep]
    return paragraphs


def clean_item(item: tuple) -> tuple[str, list[list[str]], int]:
    """Worker: (source, how, reader, payload, spec) -> (source, paragraphs per doc, raw chars)."""
    source, how, reader, payload, spec = item
    if how == "path":
        texts = read_file(reader, Path(payload).read_bytes())
    elif how == "bytes":
        texts = read_file(reader, payload)
    else:  # already text
        texts = [payload]
    raw = sum(len(t) for t in texts)
    return source, [clean_text(t, spec) for t in texts], raw


def _key(text: str) -> bytes:
    return hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=16).digest()


class Deduper:
    """Exact de-duplication (whitespace-insensitive) of paragraphs or whole documents."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.seen: set[bytes] = set()
        self.dropped_chars = 0

    def _new(self, text: str) -> bool:
        key = _key(text)
        if key in self.seen:
            self.dropped_chars += len(text)
            return False
        self.seen.add(key)
        return True

    def __call__(self, paragraphs: list[str], code: bool) -> str:
        joiner = "" if code else "\n\n"
        if self.mode == "paragraph" and not code:
            paragraphs = [p for p in paragraphs if self._new(p)]
            return joiner.join(paragraphs)
        text = joiner.join(paragraphs)
        if self.mode == "none" or not text:
            return text
        return text if self._new(text) else ""


def cut_document(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at a blank line, else a newline, else hard.

    The pieces concatenate back to `text` exactly (prose pieces are then stripped).
    """
    pieces = []
    while len(text) > limit:
        window = text[:limit]
        pos = window.rfind("\n\n")
        if pos < limit // 4:
            pos = window.rfind("\n")
        if pos < limit // 4:
            pos = limit - 1
        pieces.append(text[:pos + 1])
        text = text[pos + 1:]
    if text:
        pieces.append(text)
    return pieces
