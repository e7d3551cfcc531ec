"""A plain Hyena LM forward written the way the original reference code computes it, for benchmarks only.

It reads the weights of a hyena-hf ``HyenaForCausalLM`` (implicit filters, no attention layers) and computes the same
function with the original's structure: ``in_proj`` in (B, L, C), a transpose to (B, C, L), the depthwise short
convolution with ``padding=k-1`` then a slice, the implicit filter MLP evaluated per forward, ``torch.fft`` at size
exactly 2L (pad / rfft / multiply / irfft / slice / skip as separate ops), a transpose back, ``out_proj``; pre-norm
blocks with a GELU(tanh) MLP. ``benchmarks/bench_model.py`` checks that its logits equal the model's before timing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _fftconv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    seqlen = u.shape[-1]
    fft_size = 2 * seqlen
    k_f = torch.fft.rfft(k, n=fft_size) / fft_size
    u_f = torch.fft.rfft(u.to(dtype=k.dtype), n=fft_size)
    y = torch.fft.irfft(u_f * k_f, n=fft_size, norm="forward")[..., :seqlen]
    return (y + u * D.unsqueeze(-1)).to(dtype=u.dtype)


def _implicit_filter(filt, seqlen: int) -> torch.Tensor:
    h = filt.z[:, :seqlen]
    for linear in filt.mlp:
        h = torch.sin(filt.sin_freq * linear(h))
    h = filt.out(h)
    if filt.config.modulate:
        h = h * (torch.exp(-filt.t[:, :seqlen] * filt.deltas.abs()) + filt.config.modulation_shift)
    return h


def _operator(op, u: torch.Tensor) -> torch.Tensor:
    d, order = op.config.hidden_size, op.config.hyena_order
    seqlen = u.shape[1]
    u = op.in_proj(u).transpose(1, 2)  # 'b l d -> b d l'
    uc = op.short_filter(u)[..., :seqlen]
    *x, v = uc.split(d, dim=1)
    k = _implicit_filter(op.filter, seqlen)[0].view(seqlen, d, order - 1).permute(2, 1, 0)  # 'l (d o) -> o d l'
    bias = op.filter.D.view(d, order - 1).t()
    for o, x_i in enumerate(reversed(x[1:])):
        v = _fftconv(v * x_i, k[o], bias[o])
    return op.out_proj((v * x[0]).transpose(1, 2))  # 'b d l -> b l d'


def check_supported(model) -> None:
    config = model.config
    if config.attn_layer_idx or config.filter_type != "implicit":
        raise ValueError("plain_hyena covers implicit-filter Hyena LMs without attention layers")


def plain_forward(model, input_ids: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
    """Logits of ``model`` (a HyenaForCausalLM) for ``input_ids`` (the last ``logits_to_keep`` positions, all when 0),
    computed the original way."""
    backbone = model.backbone
    hidden, residual = backbone.embeddings(input_ids), None
    for block in backbone.layers:
        residual = hidden if residual is None else hidden + residual
        hidden = _operator(block.mixer, block.norm1(residual))
        residual = hidden + residual
        hidden = block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(residual)), approximate="tanh"))
    hidden = backbone.norm_f(hidden + residual)[:, -logits_to_keep:]
    return model.lm_head(hidden)[..., : model.config.vocab_size]
