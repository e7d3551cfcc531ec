"""The models the benchmarks compare: a Hyena language model and a GPT-2 (SDPA) of the same width and depth."""

from __future__ import annotations

from transformers import GPT2Config, GPT2LMHeadModel

from hyena_hf import HyenaConfig, HyenaForCausalLM


def bench_hyena(hidden_size: int, layers: int, max_len: int, vocab: int = 50257, **overrides) -> HyenaForCausalLM:
    """Hyena (order 2, filter MLP width 64, 33 positional features) in eval mode, initialised from the current seed."""
    config = HyenaConfig(
        vocab_size=vocab,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        max_position_embeddings=max_len,
        filter_order=64,
        filter_emb_dim=33,
        embd_pdrop=0.0,
        **overrides,
    )
    return HyenaForCausalLM(config).eval()


def same_size_gpt2(hidden_size: int, layers: int, max_len: int, vocab: int = 50257, **overrides) -> GPT2LMHeadModel:
    """GPT-2 of the same width and depth (heads of 64 features), SDPA attention, eval mode."""
    config = GPT2Config(
        vocab_size=vocab,
        n_embd=hidden_size,
        n_layer=layers,
        n_head=max(1, hidden_size // 64),
        n_positions=max_len,
        attn_implementation="sdpa",
        **overrides,
    )
    return GPT2LMHeadModel(config).eval()
