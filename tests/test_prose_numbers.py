"""Numbers in prose cannot drift: every figure a README quotes is found, at its printed precision, in
the committed results of its study (fits.json, the CSVs, the reports the committed code generated
from them), or is listed here as a setting of the study. The figures a conclusion rests on are
pinned to their exact source (CLAIMS): a figure that moved, or that came from the wrong cell or a
pooled table, fails."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from prose_numbers import figures, matches, result_values

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
READMES = [ROOT / "README.md"] + sorted(RESULTS.glob("*/README.md"))

# figures that are settings or facts of the design, not measurements (with why)
SETTINGS = {
    "README.md": {"4,096": "data.stopping_val_tokens", "32,768": "data.val_tokens", "50,257": "GPT-2's vocabulary",
                  "64": "a test model's width", "512": "a vocabulary size", "1024": "a context length",
                  "143": "SIGTERM's exit status", "130": "SIGINT's exit status"},
    "pretrain_budget_cpu": {"2,048": "tokens per step: batch 16 × context 128"},
    "predicted_343k": {"84": "the held-out model's width", "76,832": "the largest trained size's N (table.csv)",
                       "1.6e7": "the budget in tokens (pretrain.tokens)"},
    "atlas": {"360": "the atlas's jobs: 3 sizes × (6 pre-trainings + 24 scratch + 90 fine-tunes)"},
    "gpu": {"10": "the check's time budget in minutes", "1024": "gpt2_85m's context"},
    "schedule_ablation": {"1,000": "the old arm's step cap", "50": "warm-up steps", "40": "validation interval",
                          "20,000": "the step ceiling", "4,096": "data.stopping_val_tokens", "32,768": "data.val_tokens"},
    "finetune_lr": {"0.2%": "the plateau rule's tolerance", "20,000": "the step ceiling"},
    "text2python_cpu": {"50,000": "the study's step ceiling (optim.max_steps)",
                        "6.6e5": "the size the plan proposes (12·6·96²)"},
    "demo": {"81×": "pre-training characters over the largest D_F (conf/experiment/demo.yaml)",
             "1280": "the screenshot's width", "1600": "the screenshot's height", "84": "the larger size's width"},
}


def _study(readme: Path) -> str:
    return "README.md" if readme.parent == ROOT else readme.parent.name


@pytest.mark.parametrize("readme", READMES, ids=_study)
def test_every_quoted_figure_is_in_the_committed_results(readme):
    folders = [RESULTS] if readme.parent == ROOT else [readme.parent]
    values = result_values(folders, readme)
    allowed = {**SETTINGS.get(_study(readme), {}),  # and the figures CLAIMS pin to their exact source
               **{text: claim for study, claim, _ in CLAIMS if study == _study(readme) for text, _ in _numbers(claim)}}
    stray = [f"line {f.line}: {f.text}" for f in figures(readme.read_text(encoding="utf-8"))
             if f.text.rstrip("%×") not in allowed and f.text not in allowed and not matches(f, values)]
    assert not stray, (f"{readme.relative_to(ROOT)} quotes figures found in none of its committed results "
                       f"(regenerate them, correct the prose, or list a setting in SETTINGS): {stray}")


# --- the figures conclusions rest on, pinned to their source -------------------------------------------

def _fits(study: str) -> dict:
    return json.loads((RESULTS / study / "fits.json").read_text())


def _fit(doc: dict, law: str, group: str = "") -> dict:
    return next(f for f in doc["fits"] if f["law"] == law and f["group"] == group)


def _table(study: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / study / "table.csv")


def _budget_claims() -> list[tuple[str, list[float]]]:
    doc, t = _fits("pretrain_budget_cpu"), _table("pretrain_budget_cpu")
    tr, gap77 = _fit(doc, "transfer"), _fit(doc, "gap", "N=7.68e+04")
    top = t["pretrain_budget"].max()
    ft = t[(t["regime"] == "finetune") & (t["pretrain_budget"] == top)]
    dt_3k = [ft[(ft["N"] == 3312) & (ft["D_F"].round(-3) == d)]["D_T"].mean() for d in (1e4, 3e4, 1e5)]
    gains = pd.DataFrame(doc["budgets"]["gains"])
    g77 = {d: list(gains[(gains["N"] == 76832) & (gains["D_F"].round(-3) == d)].sort_values("from")["removed"])
           for d in (1e4, 3e4, 1e5)}
    held = pd.DataFrame(doc["budgets"]["held_out"])
    miss = held[(held["N"] == 76832) & (held["D_F"].round(-3) == 1e4) & held["held_out"].str.startswith("largest budget")]
    return [
        ("α = 0.392 [0.0318, 0.703] and β = 0.692 [0.461, 0.998]",
         [tr["params"]["alpha"], *tr["ci"]["alpha"], tr["params"]["beta"], *tr["ci"]["beta"]]),
        ("misfit is 38.41% RMS in ln D_T, against 9.25% of measured noise (p = 0.0022)",
         [100 * tr["goodness"]["rms_log"], 100 * tr["goodness"]["noise_rms"], tr["goodness"]["p_value"]]),
        ("its D_T is 1.01e4, 1.37e4 and 1.62e4 characters", dt_3k),  # the largest budget, not a pooled average
        ("It is 1,251 tokens", [ft[ft["D_F"] < 5e3]["D_F_tokens"].iloc[0]]),
        ("misfit of 3.05% RMS against 1.17% of noise (p = 0.022)",
         [100 * gap77["goodness"]["rms_log"], 100 * gap77["goodness"]["noise_rms"], gap77["goodness"]["p_value"]]),
        ("−0.012, +0.003 and −0.007 at D_F = 1e4", g77[1e4]),
        ("+0.048, +0.107 and +0.035 at D_F = 3e4", g77[3e4]),
        ("+0.085, +0.074 and +0.022 at D_F = 1e5", g77[1e5]),
        ("the prediction was 1.916 [1.74, 2.03] nats/char and the measurement 2.055",
         [miss["loss_predicted"].iloc[0], *miss["loss_ci"].iloc[0], miss["loss"].iloc[0]]),
    ]


def _numbers(text: str) -> list[tuple[str, float]]:
    found = re.findall(r"(?<![\w.])[-−+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?", text)
    return [(m, float(m.replace("−", "-").replace(",", ""))) for m in found if not re.fullmatch(r"\d", m)]


def _atlas_claims() -> list[tuple[str, list[float]]]:
    pairs = pd.read_csv(RESULTS / "atlas" / "pairs.csv")
    return [("266 of the 270 fine-tuned losses are interpolated",
             [pairs["interpolated_points"].sum(), pairs["interpolated_points"].sum() + pairs["model_based_points"].sum()])]


def _mix_claims() -> list[tuple[str, list[float]]]:
    doc = _fits("mix")
    spread = {(round(r["N"]), round(r["D_F"], -3)): r for r in doc["spread"]}

    def ratio(n, d_f):
        return spread[(n, d_f)]["max_over_min"]

    return [("σ of ln D_T = 0.241 (8 cells, 16 degrees of freedom)",
             [doc["seed_noise"]["sigma"], doc["seed_noise"]["dof"]]),  # single digits (the 8 cells) are not compared
            ("the chosen law's pooled residual, 0.305", [doc["residual"][doc["law"]]]),
            ("is 1.63×, 1.65× and 2.48× at N = 12.8k", [ratio(12768, d) for d in (1e4, 3e4, 1e5)]),
            ("and 1.31×, 1.2× and 1.57× at N = 76.8k", [ratio(76832, d) for d in (1e4, 3e4, 1e5)]),
            ("differs by −1.0σ and +0.9σ at N = 76.8k", [spread[(76832, d)]["ends_z"] for d in (1e4, 3e4)]),
            ("and by −0.8σ and +0.2σ at N = 12.8k", [spread[(12768, d)]["ends_z"] for d in (1e4, 3e4)])]


def _predicted_claims() -> list[tuple[str, list[float]]]:
    doc = json.loads((RESULTS / "predicted_343k" / "predictions.json").read_text())
    trained = _table("pretrain_budget_cpu")["N"].max()
    held = doc["cells"][0]["N"]
    return [("N = 343,224 non-embedding parameters", [held]),
            ("That is 4.5× the largest size trained", [held / trained]),
            ("stamped with a sha256 of the 70 run records", [len(doc["fitted_on"]["runs"])])] + _verified_claims()


def _verified_claims() -> list[tuple[str, list[float]]]:
    folder = RESULTS / "predicted_343k"
    v = pd.read_csv(folder / "verify.csv")

    def cell(law, d, quantity):
        row = v[(v["law"] == law) & (v["D"] == d) & (v["quantity"] == quantity)].iloc[0]
        return [row["measured"], row["predicted"], row["lo"], row["hi"]]

    fits = {f["law"]: f for f in json.loads((folder / "fits.json").read_text())["fits"] if not f["group"]}
    transfer = fits["transfer"]
    return [("measured 2.57 and 2.254 nats/char, predicted 1.718 [1.371, 1.986] and 1.616 [1.354, 1.821]",
             cell("transfer", 3e3, "loss")[:1] + cell("transfer", 1e4, "loss")[:1] + cell("transfer", 3e3, "loss")[1:]
             + cell("transfer", 1e4, "loss")[1:]),
            ("measured 1.186 and 0.835, predicted 1.391 [1.325, 1.47] and 1.217 [1.151, 1.316]",
             cell("kaplan", 1e6, "loss")[:1] + cell("kaplan", 3e6, "loss")[:1] + cell("kaplan", 1e6, "loss")[1:]
             + cell("kaplan", 3e6, "loss")[1:]),
            ("| transfer, interpolated D_E | 0.478 [0.262, 0.644] | 0.561 [0.36, 0.794] | 42 |",
             [transfer["params"]["alpha"], *transfer["ci"]["alpha"], transfer["params"]["beta"], *transfer["ci"]["beta"],
              transfer["n_points"]])]


CLAIMS = [("pretrain_budget_cpu", claim, values) for claim, values in _budget_claims()] + \
         [("atlas", claim, values) for claim, values in _atlas_claims()] + \
         [("predicted_343k", claim, values) for claim, values in _predicted_claims()] + \
         [("mix", claim, values) for claim, values in _mix_claims()]


@pytest.mark.parametrize("study,claim,values", CLAIMS, ids=lambda c: str(c)[:40])
def test_the_conclusions_quote_their_exact_source(study, claim, values):
    readme = " ".join((RESULTS / study / "README.md").read_text().split())
    assert claim in readme, f"the README no longer says: {claim}"
    quoted = _numbers(claim)[:len(values)]  # the figures come first; what follows says where (at D_F = 1e4)
    assert len(quoted) == len(values), (quoted, values)
    for (text, number), value in zip(quoted, values):
        mantissa, _, exponent = text.partition("e")
        digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
        assert abs(number - value) <= 0.5 * 10 ** -digits * 10 ** int(exponent or 0) * (1 + 1e-9), (claim, text, value)
