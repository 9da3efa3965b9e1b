"""A report opened in a real headless Chromium (Debian's package) as a researcher first sees it:
every image loads, no table is wider than the page, and the first screen (1280 × 1600) holds the
measured multiplier table and the D_T-vs-D_F figure with the fitted law."""

from __future__ import annotations

import shutil

import analysis_synth as syn
import pytest

from transfer_lab.analysis.collect import records_to_table
from transfer_lab.analysis.report import browser
from transfer_lab.analysis.report.sweep_report import write_report
from transfer_lab.analysis.studies.sweep_analysis import run_analysis

pytestmark = [pytest.mark.subprocess,
              pytest.mark.skipif(not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")),
                                 reason=f"no Chromium: {browser.INSTALL}")]


def test_the_report_loads_whole_and_its_first_screen_answers(tmp_path):
    res = run_analysis(records_to_table(syn.make_runs(noise=0.003, seed=3), "demo"), n_bootstrap=50)
    write_report(res, tmp_path / "rep", make_plots=True, html=True, pdf=False)
    layout = browser.check(tmp_path / "rep" / "report.html")
    assert len(layout["images"]) >= 5 and layout["broken"] == [], layout["broken"]
    assert layout["overflowing"] == [], layout["overflowing"]
    first = [i for i in layout["images"] if i["top"] < browser.HEIGHT]
    assert [i["src"] for i in first][:1] == ["D_T vs D_F"]  # the law's figure on the first screen
    assert layout["first_screen"]["tables"] >= 1 and layout["tables"][0]["top"] < first[0]["top"]  # table first
    png = browser.screenshot(tmp_path / "rep" / "report.html", tmp_path / "first_screen.png")
    assert png.stat().st_size > 20_000  # a rendered page, not a blank one
    broken = tmp_path / "rep" / "broken.html"
    broken.write_text((tmp_path / "rep" / "report.html").read_text().replace(
        "</body>", '<img alt="missing" src="nowhere.png"><table><tr>' + "<td>wide</td>" * 400 + "</tr></table></body>"))
    bad = browser.check(broken)
    assert bad["broken"] == ["missing"] and len(bad["overflowing"]) == 1  # the check can fail
