"""analyze.py action=mix on synthetic mix studies whose best mixture is known (analysis_synth.MIX_OPTIMUM):
the mixing law recovers it, held-out runs are checked against their prediction and fitted nowhere,
the simplex's best and ranking, the atlas prior's arithmetic, and the report a researcher reads."""

from __future__ import annotations

import analysis_synth as syn
import numpy as np
import pytest

from transfer_lab.analysis import collect
from transfer_lab.analysis.fit import laws
from transfer_lab.analysis.fit.mix_fitting import simplex_grid
from transfer_lab.analysis.report.mix_report import (
    recommendation,
    verify_commands,
    write_mix,
)
from transfer_lab.analysis.studies.mixing import load_mix

SIMPLEX = [{"english": 1}, {"code_nonpython": 1}, {"german": 1},
           {"english": .3, "code_nonpython": .45, "german": .25}, {"english": .2, "code_nonpython": .05, "german": .75},
           {"english": .25, "code_nonpython": .45, "german": .3}, {"english": .25, "code_nonpython": .3, "german": .45},
           {"english": .05, "code_nonpython": .75, "german": .2}, {"english": .25, "code_nonpython": .7, "german": .05},
           {"english": .05, "code_nonpython": .6, "german": .35}, {"english": .7, "code_nonpython": .15, "german": .15}]
R_STAR = {"english": 1 - syn.EDGE_OPTIMUM_R, "code_nonpython": syn.EDGE_OPTIMUM_R}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    verify = [(1e7, R_STAR), (1e7, {"english": 0.05, "code_nonpython": 0.95})]
    verify += [(1e6, w) for w in SIMPLEX[2:8]] + [(1e6, syn.MIX_OPTIMUM)]
    syn.write_runs(root, "mix", syn.make_mix_runs(simplex=SIMPLEX, verify=verify))
    return root, load_mix(root, "mix", n_bootstrap=200, seed=0, ci=0.95, monotone_tolerance=0.003)


def test_the_mixing_law_recovers_the_known_best_ratio(study):
    _, s = study
    assert s.axis == ("english", "code_nonpython") and s.law == "mix_quadratic"  # Ye's form is monotone: no optimum
    assert s.selection["mix_quadratic"] < s.selection["mix_exponential"]
    for cell in s.cells:
        lo, hi = cell.best_ci["code_nonpython"]
        assert lo <= syn.EDGE_OPTIMUM_R <= hi and hi - lo < 0.2, (cell.n, cell.d_f, cell.best_ci)
        assert cell.gain_ci[0] > 1  # the best mixture transfers more than english alone
    assert not any(m["moves"] for m in s.moves)  # the truth's optimum is the same at every N and D_F


def test_held_out_runs_are_predicted_not_fitted(study):
    _, s = study
    assert all(c.fit.n_points == 5 for c in s.cells)  # the grid's five ratios only
    assert {round(v["r"], 2) for v in s.verified} == {0.6, 0.95}
    assert all(v["inside"] for v in s.verified if round(v["r"], 2) == 0.6)


def test_the_simplex_finds_the_interior_best_and_its_ranking_holds_at_a_larger_size(study):
    _, s = study
    simplex = s.simplex
    assert simplex["sources"] == ["english", "code_nonpython", "german"] and simplex["mixtures"] == 14
    assert simplex["law"] == "simplex_quadratic"
    best = simplex["best"][1e4]
    for source, truth in syn.MIX_OPTIMUM.items():
        lo, hi = best.best_ci[source]
        assert lo <= truth <= hi, (source, best.best_ci)
    ranking = [r for r in simplex["ranking"] if r["N"] == 1e6]
    assert ranking and all(r["spearman"] > 0.8 for r in ranking)
    assert len(simplex_grid(3)) == 231 and np.allclose(simplex_grid(3).sum(axis=1), 1)


def test_the_atlas_prior_is_the_weighted_mean_of_the_pure_sources(study):
    _, s = study
    row = s.prior[(s.prior["N"] == 1e5) & (s.prior["D_F"] == 1e4)
                  & (s.prior["mixture"] == "code_nonpython 50% + english 50%")].iloc[0]
    pure = s.table[(s.table["N"] == 1e5) & (s.table["D_F"] == 1e4) & ~s.table["held_out"]]
    dt = {m: pure.loc[pure["source_mix"] == m, "D_T"].mean() for m in ("english", "code_nonpython")}
    assert row["arithmetic"] == pytest.approx((dt["english"] + dt["code_nonpython"]) / 2)
    assert row["geometric"] == pytest.approx(np.sqrt(dt["english"] * dt["code_nonpython"]))
    assert np.isnan(laws.mixture_dt_geometric([0.5, 0.5], [1.0, -1.0]))  # a source that hurts: no geometric mean


def test_the_report_says_what_to_pre_train_on_and_how_to_check_it(study, tmp_path):
    root, s = study
    sentence, narrow = recommendation(s)
    assert sentence.startswith("for python at N = 10M with 1e4 target characters, pre-train on 6")
    assert "code_nonpython (the rest english): worth" in sentence
    assert narrow.startswith("python train.py -m experiment=mix_text_code_python model.n_layer=8 model.n_embd=320")
    commands = verify_commands(s)
    assert any("experiment=mix_verify model.n_layer=4" in c and "german" in c for c in commands)  # the simplex's
    path = write_mix(s, tmp_path, "python analyze.py action=mix", {"n_bootstrap": 200, "seed": 0, "ci": 0.95})
    text = path.read_text()
    for heading in ("## Recommendation", "## The mixing law", "## Verified", "## Three or more sources",
                    "## The atlas as a prior"):
        assert heading in text
    assert "| english | transfer |" in text and "| 1.9e+04 |" in text  # the paper's numbers beside r = 0
    assert (tmp_path / "plots" / "mix_ratio.png").stat().st_size > 10_000
    assert (tmp_path / "verify.sh").read_text().count('"${PYTHON:-python}" train.py') == len(commands)
    # every record is a cell, a from-scratch run, or a run left out with the reason said: the simplex list
    # repeats the grid's pure sources at N = 1e5 under other keys, so the newest of each pair is kept
    assert len(collect.load_local(root / "sweeps" / "mix")[0]) == len(s.table) + 36 + 6
    assert "6 fine-tuned runs left out (6 superseded)" in s.messages[0]


def test_an_r_star_on_the_grid_is_its_own_measurement_and_seeds_narrow_a_trained_interval(study):
    import copy

    from transfer_lab.analysis.report.mix_sections import on_grid

    s = copy.deepcopy(study[1])
    cell = s.cell(s.ref["N"], s.ref["D_F"])
    cell.best["code_nonpython"], cell.best_ci["code_nonpython"] = 0.0, (0.0, 1.0)  # as on the real 2-core grid
    text = on_grid(s)
    assert text.startswith("r* = 0% at N = 10M, D_F = 1e4 is a ratio the grid trained") and "measured D_T there" in text
    _, narrow = recommendation(s)  # every ratio inside [0%, 100%] is trained: seeds, not ratios, narrow it
    assert narrow.endswith(" seed=1,2") and "english,{english:0.75,code_nonpython:0.25}" in narrow
