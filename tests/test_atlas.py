"""The atlas analysis on a synthetic 3-corpus sweep with a known, directed transfer law per pair."""

import json

import analysis_synth as syn
import numpy as np
import pandas as pd
import pytest

from transfer_lab.analysis.report.atlas_report import write_atlas
from transfer_lab.analysis.studies.atlas import load_atlas

PAIRS = {("en", "de"): {"k": 2e4, "alpha": 0.15, "beta": 0.4}, ("de", "en"): {"k": 5e3, "alpha": 0.35, "beta": 0.4},
         ("en", "py"): {"k": 3e3, "alpha": 0.25, "beta": 0.45}, ("py", "en"): {"k": 1e3, "alpha": 0.3, "beta": 0.4},
         ("de", "py"): {"k": 2e3, "alpha": 0.3, "beta": 0.45}, ("py", "de"): {"k": 1e3, "alpha": 0.3, "beta": 0.4}}


def test_atlas_recovers_each_directed_pair_and_writes_its_report(tmp_path):
    syn.write_runs(tmp_path, "atlas", syn.make_atlas_runs("atlas", PAIRS))
    out = tmp_path / "report"
    study = load_atlas(tmp_path, "atlas", ref_n=None, ref_d_f=None, n_bootstrap=200, seed=0, ci=0.95,
                       monotone_tolerance=0.003)
    path, pairs = write_atlas(study, out), study.pairs
    assert len(pairs) == 6 and {(p.source, p.target) for p in pairs} == set(PAIRS)
    for p in pairs:
        truth = PAIRS[(p.source, p.target)]
        assert p.law == "transfer", (p.source, p.target, p.messages)  # the scratch grid spans D_E: interpolated
        lo, hi = p.ci["alpha"]
        assert lo <= truth["alpha"] <= hi, (p.source, p.target, p.ci["alpha"])
        assert p.multiplier_ci[0] <= p.multiplier <= p.multiplier_ci[1]
    for p in pairs:  # the multiplier at the reference (the largest N, the smallest D_F), against the truth
        t = PAIRS[(p.source, p.target)]
        true = 1 + t["k"] * 1e4 ** (t["alpha"] - 1) * 1e7 ** t["beta"]
        assert p.multiplier_ci[0] <= true <= p.multiplier_ci[1], (p.source, p.target, p.multiplier_ci, true)
    for p in pairs:  # the reference cell measured, with its own interval from the D_E bootstrap
        t = PAIRS[(p.source, p.target)]
        true = 1 + t["k"] * 1e4 ** (t["alpha"] - 1) * 1e7 ** t["beta"]
        assert p.measured_method == "interpolated" and p.measured_ci[0] <= p.measured <= p.measured_ci[1]
        assert p.measured_ci[0] > 1 and abs(np.log(p.measured / true)) < 0.2, (p.source, p.target, p.measured, true)
    table = pd.read_csv(out / "pairs.csv")
    assert len(table) == 6 and {"alpha_lo", "alpha_hi", "multiplier", "beta_identified", "measured_multiplier",
                                "measured_lo", "measured_hi"} <= set(table.columns)
    text = path.read_text()
    assert "## Asymmetry" in text and "de ↔ en" in text and "## Checks against the literature" in text
    assert "in 6 of 6 pairs the measured multiplier's interval lies above 1" in text
    assert text.index("## What transfers, measured") < text.index("## How it was measured")  # the answer first
    for name in ("alpha", "multiplier"):
        assert (out / "plots" / f"{name}.png").exists() and (out / "plots" / f"{name}.pdf").exists()
    assert json.loads((out / "atlas.json").read_text())["pairs"][0]["source"] in {"de", "en", "py"}
    assert (out / "atlas.html").exists()
    bare = tmp_path / "docs"  # html=false: the report committed to docs/ without its 330 kB page
    write_atlas(study, bare, html=False)
    assert (bare / "atlas.md").exists() and not (bare / "atlas.html").exists()


SMALL = ["model=n3k", "data.finetune_chars=1e4", "data.scratch_chars=1e4"]  # every cell is composed: keep them few


@pytest.mark.parametrize("argv,named", [
    (["data.source=english,klingon"], "klingon"),  # an unknown corpus
    (["data.source=english", "data.target=english"], "two corpora"),  # a single corpus: no pair
    (["data.source=english,german,english"], "more than once"),  # duplicates
    (["data.source=english,german", "data.target=english,german", "tokenizer.train_on=null"],
     "tokenizer.train_on"),  # a BPE per source: pairs would not share a tokenizer
    (["data.source=english,german", "data.target=english,german", "tokenizer.vocab_size=512,1024"],
     "different tokenizer settings"),
])
def test_a_bad_atlas_is_one_line_before_anything_trains(argv, named, capsys):
    from transfer_lab.study.launch_checks import check_sweep_cells

    with pytest.raises(SystemExit) as exit_info:
        check_sweep_cells(["-m", "experiment=atlas", *SMALL, *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and named in err[0], err


def test_a_pair_whose_fit_ran_into_a_bound_shows_no_estimate_there():
    from transfer_lab.analysis.report.atlas_report import _estimate, literature_checks
    from transfer_lab.analysis.studies.atlas import PairResult

    pinned = PairResult(source="english", target="german", law="unified", params={"k": 1e-20, "alpha": -2.0, "beta": 3.0},
                        ci={"k": (1e-20, 1e-20), "alpha": (-2.0, -2.0), "beta": (3.0, 3.0)}, at_bounds=["k", "alpha", "beta"])
    free = PairResult(source="spanish", target="german", law="unified", params={"k": 5.0, "alpha": 0.4, "beta": 0.3},
                      ci={"k": (2.0, 9.0), "alpha": (0.3, 0.5), "beta": (0.2, 0.4)})
    assert _estimate(pinned, "beta").startswith("at its bound") and "[" not in _estimate(pinned, "beta")
    assert _estimate(free, "beta") == "0.3 [0.2, 0.4]"
    other = PairResult(source="python", target="german", law="unified", params={"beta": 0.35}, ci={"beta": (0.25, 0.45)})
    betas = [line for line in literature_checks([pinned, free, other]) if "β for target german" in line]
    assert betas and "english" not in betas[0] and "spanish" in betas[0]


def test_the_kim_check_says_which_multiplier_intervals_are_apart():
    from transfer_lab.analysis.report.atlas_report import literature_checks
    from transfer_lab.analysis.studies.atlas import PairResult

    def pair(target, m, lo, hi):
        return PairResult(source="english", target=target, law="transfer", multiplier=m, multiplier_ci=(lo, hi))

    kim = literature_checks([pair("german", 5.5, 4.0, 7.0), pair("spanish", 5.3, 1.3, 22.0), pair("chinese", 1.6, 1.1, 3.7)])[0]
    assert "English→German (5.5 [4, 7]) is not distinguishable from English→Spanish" in kim
    assert "and more than English→Chinese (1.6 [1.1, 3.7])" in kim
