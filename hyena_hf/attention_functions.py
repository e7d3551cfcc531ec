"""The eager attention kernel and the rotary embedding of the hybrid attention layers (the other kernels come from
transformers' ``ALL_ATTENTION_FUNCTIONS``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def apply_rotary(x: torch.Tensor, position_ids: torch.Tensor, inv_freq: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    """Non-interleaved rotary embedding of the first ``rotary_dim`` features of ``x (B, H, L, hd)`` at
    ``position_ids (B, L)``; the angles are computed in ``inv_freq``'s dtype (float32)."""
    freqs = position_ids[:, None, :, None].to(inv_freq.dtype) * inv_freq  # (B, 1, L, r/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    first, second = rot.chunk(2, dim=-1)
    return torch.cat((rot * cos + torch.cat((-second, first), dim=-1) * sin, rest), dim=-1)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    """Plain attention: ``softmax(q kᵀ · scaling + mask) v`` for ``q (B, H, L, hd)``, ``k, v (B, H, T, hd)`` and an
    additive ``mask (B|1, 1, L, T)``; returns the output ``(B, L, H, hd)`` and the weights ``(B, H, L, T)``."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask.to(weights.dtype)
    weights = F.softmax(weights, dim=-1, dtype=torch.promote_types(query.dtype, torch.float32)).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def rotary_inv_freq(config) -> torch.Tensor:
    """Rotary inverse frequencies ``(rotary_emb_dim / 2,)`` in float32 (``config``: a HyenaConfig)."""
    dim = config.rotary_emb_dim
    return 1.0 / (config.rotary_emb_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))


def attention_function(implementation: str | None, output_attentions: bool):
    """The attention kernel for ``config._attn_implementation``: the eager one here (also whenever the weights are
    asked for: the fused kernels do not return them), else transformers' registered one."""
    if output_attentions or implementation in (None, "eager"):
        return eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[implementation]
