"""Readers: the bytes of one raw file -> its documents (plain text), one function per format."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from html.parser import HTMLParser

BLOCK_TAGS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl", "dt",
              "dd", "table", "tr", "section", "article", "blockquote", "pre", "title", "header",
              "footer", "nav", "body", "hr", "caption", "figure", "form", "main", "aside"}
SKIP_TAGS = {"script", "style", "head", "noscript", "svg", "template"}
LINE_TAGS = {"br", "td", "th"}


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _gunzip(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


class _TextExtractor(HTMLParser):
    """HTML -> text with paragraph breaks at block elements; script/style/head dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if tag in SKIP_TAGS:
            self.skip += 1
        elif tag in BLOCK_TAGS:
            self.parts.append("\n\n")
            self.pre += tag == "pre"
        elif tag in LINE_TAGS:
            self.parts.append("\n" if tag == "br" else " ")

    def handle_startendtag(self, tag, attrs):  # noqa: ANN001
        if tag in ("br", "hr"):
            self.parts.append("\n")

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag in SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in BLOCK_TAGS:
            self.parts.append("\n\n")
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data):  # noqa: ANN001
        if self.skip:
            return
        self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [line.strip() if not line.startswith("    ") else line.rstrip()
             for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def read_text(data: bytes) -> list[str]:
    return [_decode(data)]


def read_text_gz(data: bytes) -> list[str]:
    return [_decode(_gunzip(data))]


def read_html(data: bytes) -> list[str]:
    return [html_to_text(_decode(data))]


def read_python(data: bytes) -> list[str]:
    return [_decode(data)]


def read_fortune(data: bytes) -> list[str]:
    text = _decode(data)
    return [part for part in re.split(r"^%[ \t]*$", text, flags=re.M) if part.strip()]


def read_gutenberg(data: bytes) -> list[str]:
    text = _decode(data)
    start = re.search(r"^\*\*\*\s*START OF.*$", text, flags=re.M | re.I)
    if start:
        text = text[start.end():]
    end = re.search(r"^(\*\*\*\s*END OF|End of (the )?Project Gutenberg).*$", text,
                    flags=re.M | re.I)
    if end:
        text = text[:end.start()]
    return [text]


def read_tagged_zh(data: bytes) -> list[str]:
    """People's Daily 1998 (word/pos tokens, [compound]tag brackets) -> plain sentences."""
    out = []
    for line in _decode(data).splitlines():
        words = []
        for token in line.split():
            token = token.lstrip("[")
            token = re.sub(r"\][a-z]+$", "", token)
            word = token.rsplit("/", 1)[0] if "/" in token else token
            if not re.fullmatch(r"\d{8}-\d{2}-\d{3}-\d{3}", word):  # article ids if present
                words.append(word)
        if words:
            out.append("".join(words))
    return ["\n\n".join(out)]


def read_lines(data: bytes) -> list[str]:
    """One paragraph per non-empty line; the file is one document (cut later by size)."""
    lines = [line.strip() for line in _decode(data).splitlines()]
    return ["\n\n".join(line for line in lines if line)]


def _pipe(cmd: list[str], data: bytes) -> str:
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.decode("utf-8", errors="replace")


def read_pod(data: bytes) -> list[str]:
    return [_pipe(["pod2text", "-w", "78"], data)]


ROFF_ESCAPES = [(r"\\f(\[[^\]]*\]|\(..|.)", ""), (r"\\s[+-]?\d+", ""), (r"\\\(em", "—"),
                (r"\\\(en", "–"), (r"\\\((aq|cq)", "'"), (r"\\\((lq|rq|dq)", '"'),
                (r"\\\(bu", "•"), (r"\\\(co", "©"), (r"\\\(..", ""), (r"\\\[[^\]]*\]", ""),
                (r"\\[-]", "-"), (r"\\[&|^%:)]", ""), (r"\\e", r"\\"), (r"\\ ", " "),
                (r"\\\*(\(..|\[[^\]]*\]|.)", ""), (r"\\(.)", r"\1")]


def strip_roff(text: str) -> str:
    """Crude roff -> text for machines without groff: drop requests, keep running text."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith((".\\\"", "'\\\"", '.\\"')):
            continue
        if line.startswith((".", "'")):
            request = line[1:].split(None, 1)
            if not request:
                continue
            name, rest = request[0], (request[1] if len(request) > 1 else "")
            if name in ("PP", "LP", "P", "SH", "SS", "TP", "IP", "sp", "br"):
                out.append("")
            if name in ("SH", "SS", "B", "I", "BR", "IR", "RB", "BI", "IB", "RI", "IP"):
                line = rest.replace('"', "")
            else:
                continue
        for pattern, repl in ROFF_ESCAPES:
            line = re.sub(pattern, repl, line)
        out.append(line)
    return "\n".join(out)


GROFF = shutil.which("groff")
# Left-adjusted output (justified pages pad words with runs of spaces); the page is decoded
# here (UTF-8) and non-ASCII characters passed as groff \[uXXXX] escapes, like preconv does.
_PRELUDE = ".am TH\n.ad l\n..\n"
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _roff_escape(text: str) -> str:
    return _NON_ASCII.sub(lambda m: f"\\[u{ord(m.group()):04X}]", text)


def read_man(data: bytes) -> list[str]:
    raw = _gunzip(data)
    if raw.lstrip().startswith(b".so ") and raw.count(b"\n") <= 2:
        return []  # a link to another page
    if GROFF:
        source = (_PRELUDE + _roff_escape(_decode(raw))).encode("ascii")
        text = _pipe([GROFF, "-Tutf8", "-mandoc", "-rcR=1", "-rHY=0", "-P-cbou"], source)
        text = re.sub(r".\x08", "", text)
        return [text]
    return [strip_roff(_decode(raw))]


READERS = {"text": read_text, "text_gz": read_text_gz, "html": read_html, "man": read_man,
           "pod": read_pod, "fortune": read_fortune, "gutenberg": read_gutenberg,
           "tagged_zh": read_tagged_zh, "lines": read_lines, "python": read_python}


def read_file(reader: str, data: bytes) -> list[str]:
    return READERS[reader](data)
