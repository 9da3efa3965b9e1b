import math

import pytest
import torch

from transfer_lab.training.model import (
    ModelShape,
    build_gpt2,
    count_params,
    expected_non_embedding,
    flops_per_token,
    padded_vocab,
)
from transfer_lab.training.schedule import lr_factor


@pytest.mark.parametrize("n_layer,n_embd,n_head", [(1, 32, 2), (2, 64, 4), (3, 48, 3)])
def test_non_embedding_params_match_gpt2_formula(n_layer, n_embd, n_head):
    model = build_gpt2(ModelShape(n_layer, n_embd, n_head, n_ctx=64, vocab_size=320))
    non_embedding, total = count_params(model)
    assert non_embedding == expected_non_embedding(n_layer, n_embd)
    # the embedding part is exactly wte (vocab × d) + wpe (n_ctx × d); the tied head adds nothing
    assert total - non_embedding == 320 * n_embd + 64 * n_embd
    assert abs(non_embedding - 12 * n_layer * n_embd**2) / non_embedding < 0.2


def test_lm_head_is_tied_and_attention_is_sdpa():
    model = build_gpt2(ModelShape(1, 32, 2, n_ctx=16, vocab_size=64))
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert model.config._attn_implementation == "sdpa"
    assert model.config.resid_pdrop == 0.0


def test_padded_vocab_and_flops():
    assert padded_vocab(50257, 64) == 50304
    assert padded_vocab(257, 1) == 257
    assert flops_per_token(1000, 2, 128, 64) == 6 * 1000 + 6 * 2 * 128 * 64


def test_lr_schedule_warms_up_then_decays_to_ten_percent():
    factors = [lr_factor(s, warmup_steps=10, horizon_steps=110, min_ratio=0.1) for s in range(130)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[110] == pytest.approx(0.1) and factors[129] == pytest.approx(0.1)


def test_a_fresh_model_predicts_every_token_about_evenly():
    """At initialisation the logits are near zero: the loss on any tokens is ≈ ln(vocabulary), and a
    step of Adam on one batch lowers it (the forward, the loss and the backward are wired)."""
    torch.manual_seed(0)
    model = build_gpt2(ModelShape(1, 32, 2, n_ctx=16, vocab_size=64))
    ids = torch.randint(0, 64, (4, 16))
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (4, 16, 64) and torch.isfinite(out.logits).all()
    assert out.loss.item() == pytest.approx(math.log(64), rel=0.05)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    out.loss.backward()
    optimizer.step()
    assert model(input_ids=ids, labels=ids).loss.item() < out.loss.item()


@pytest.mark.parametrize("n_layer,n_embd", [(1, 16), (4, 84), (8, 288)])
def test_the_planner_counts_parameters_as_the_model_does(n_layer, n_embd):
    # the light copy the plan and the sweeper use (it imports no transformers)
    from transfer_lab.study.costs import non_embedding_params

    assert non_embedding_params(n_layer, n_embd) == expected_non_embedding(n_layer, n_embd)
