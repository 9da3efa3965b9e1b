"""A report as a researcher first sees it: opened in a real (headless) Chromium at 1280 × 1600.

  check       every image loaded, and no table wider than the page (a table that overflows hides
              its last columns off the first screen)
  screenshot  the first screen, for the results README

    python -m transfer_lab.analysis.report.browser REPORT.html [--screenshot FIRST_SCREEN.png]

Chromium is Debian's package (`apt-get install chromium`); the check reads the page's layout by
running a small script in it and dumping the DOM, so it needs no driver library.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from transfer_lab.errors import ConfigError, UserError, exit_with

WIDTH, HEIGHT = 1280, 1600
INSTALL = "apt-get install -y chromium (as root)"
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({src: i.alt || i.src.slice(0, 40), ok: i.complete && i.naturalWidth > 0,
                                                 top: i.getBoundingClientRect().top}));
  const tables = [...document.querySelectorAll("table")].map(t => ({right: t.getBoundingClientRect().right,
                                                                     top: t.getBoundingClientRect().top}));
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify({width: document.documentElement.clientWidth, images, tables});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(f"no Chromium found on PATH; install it: {INSTALL}")


def _run(args: list[str], timeout: int = 120) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}"]
    try:
        done = subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"Chromium did not finish within {timeout} s") from None
    if done.returncode:
        raise UserError(f"Chromium failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def check(html: Path) -> dict:
    """{width, images: [{src, ok, top}], tables: [{right, top}], broken, overflowing, first_screen}."""
    html = Path(html)
    text = html.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / html.name
        probe.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = _run(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()])
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', dom, flags=re.S)
    if not found:
        raise UserError(f"the page {html} never finished loading in Chromium (no layout was reported)")
    layout = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    layout["broken"] = [i["src"] for i in layout["images"] if not i["ok"]]
    layout["overflowing"] = [t for t in layout["tables"] if t["right"] > layout["width"] + 1]
    layout["first_screen"] = {"images": sum(i["top"] < HEIGHT for i in layout["images"]),
                              "tables": sum(t["top"] < HEIGHT for t in layout["tables"])}
    return layout


def screenshot(html: Path, png: Path) -> Path:
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={png}", Path(html).resolve().as_uri()])
    return png


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        layout = check(args.html)
        if args.screenshot:
            screenshot(args.html, args.screenshot)
    except UserError as err:
        exit_with(err)
    print(f"{args.html}: {len(layout['images'])} images ({len(layout['broken'])} broken), {len(layout['tables'])} tables "
          f"({len(layout['overflowing'])} wider than the page); first screen ({WIDTH}×{HEIGHT}): "
          f"{layout['first_screen']['tables']} tables, {layout['first_screen']['images']} images"
          + (f"; screenshot → {args.screenshot}" if args.screenshot else ""))
    sys.exit(1 if layout["broken"] or layout["overflowing"] else 0)


if __name__ == "__main__":
    main()
