"""GPT-2 models from transformers' GPT2Config, and the parameter counts the laws are written in."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GPT2Config, GPT2LMHeadModel


@dataclass(frozen=True)
class ModelShape:
    n_layer: int
    n_embd: int
    n_head: int
    n_ctx: int
    vocab_size: int  # padded vocabulary the embedding is built with
    dropout: float = 0.0

    def config(self, attn_implementation: str = "sdpa") -> GPT2Config:
        # transformers builds eager attention unless told otherwise; sdpa is the fused kernel.
        # bos/eos ids are set inside the vocabulary (GPT2Config's default 50256 is GPT-2's own).
        return GPT2Config(
            attn_implementation=attn_implementation, bos_token_id=0, eos_token_id=0,
            vocab_size=self.vocab_size, n_positions=self.n_ctx, n_embd=self.n_embd, n_layer=self.n_layer,
            n_head=self.n_head, resid_pdrop=self.dropout, embd_pdrop=self.dropout, attn_pdrop=self.dropout,
            tie_word_embeddings=True, use_cache=False,
        )


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """Round the embedding up (e.g. 50,257 → 50,304 for 64) so matmuls hit fast kernel shapes."""
    return -(-vocab_size // multiple) * multiple


def build_gpt2(shape: ModelShape, attn_implementation: str = "sdpa") -> GPT2LMHeadModel:
    return GPT2LMHeadModel(shape.config(attn_implementation))


def count_params(model: GPT2LMHeadModel) -> tuple[int, int]:
    """(non-embedding N, total). N excludes wte and wpe; the LM head is tied to wte."""
    total = sum(p.numel() for p in model.parameters())  # parameters() lists the tied weight once
    embedding = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    return total - embedding, total


def expected_non_embedding(n_layer: int, n_embd: int) -> int:
    """12·L·d² from the weights, plus 13·L·d of biases and layer norms per block, plus ln_f."""
    return n_layer * (12 * n_embd**2 + 13 * n_embd) + 2 * n_embd


def flops_per_token(non_embedding_params: int, n_layer: int, n_ctx: int, n_embd: int) -> float:
    """Training FLOPs per token (Kaplan et al.): 6·N plus the attention term 6·n_layer·n_ctx·n_embd."""
    return 6.0 * non_embedding_params + 6.0 * n_layer * n_ctx * n_embd
