"""Diagonal linear recurrences ``s <- p s + u`` with complex poles ``p``: the impulse responses the modal filter
and H3's SSM convolve with, and the state a prompt leaves behind (the prefill of recurrent decoding)."""

from __future__ import annotations

import torch


def modal_impulse_response(poles: torch.Tensor, residues: torch.Tensor, seqlen: int) -> torch.Tensor:
    """(C, N) poles and residues -> (C, seqlen) real filters Re sum_n R_n p_n^t."""
    t = torch.arange(seqlen, device=poles.device, dtype=poles.real.dtype)
    return torch.einsum("cn,cnl->cl", residues, pole_powers(poles, t)).real


def pole_powers(poles: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """(..., N) poles, (L,) exponents -> (..., N, L) p^e, through log so gradients flow; p = 0 is nudged to 1e-30
    (log 0 = -inf would give NaN at e = 0)."""
    safe = torch.where(poles.abs() > 1e-30, poles, torch.full_like(poles, 1e-30))
    return torch.exp(torch.log(safe).unsqueeze(-1) * exponents)


def decayed_sum(u: torch.Tensor, poles: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """sum_t p^(T-1-t) u_t for ``u: (B, C, T)`` and ``poles: (C, N)`` -> ``(B, C, N)`` complex: the state a diagonal
    recurrence ``s <- p s + u`` reaches after T inputs. Chunked so memory stays O(C N chunk) at any T."""
    seqlen = u.shape[-1]
    state = u.new_zeros(u.shape[0], *poles.shape, dtype=poles.dtype)
    for start in range(0, seqlen, chunk):
        block = u[..., start : start + chunk]
        n = block.shape[-1]
        exponents = torch.arange(n - 1, -1, -1, device=u.device, dtype=poles.real.dtype)
        powers = pole_powers(poles, exponents)  # (C, N, n)
        state = state * powers[..., 0] * poles + torch.einsum("bct,cnt->bcn", block.to(poles.dtype), powers)
    return state
