"""Diagonal linear recurrences ``s <- p s + u`` with complex poles ``p``: the impulse responses the modal filter
and H3's SSM convolve with, and the state a prompt leaves behind (the prefill of recurrent decoding); H3's
discretisation and its shift SSM."""

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


def bilinear_discretisation(
    dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear (Tustin) discretisation of the diagonal SSM ``x' = A x + B u, y = C x`` with step ``dt (d, 1)``;
    ``A, B, C (d, N)`` complex -> ``(dA, dC')`` of shape ``(d, N)``, the kernel being ``2 Re sum_n dC'_n dA_n^l``."""
    dtA = A * dt
    dC = B * C * (1.0 - dtA / 2).reciprocal() * dt
    dA = (1.0 + dtA / 2) / (1.0 - dtA / 2)
    return dA, dC


def shift_ssm_kernel(B: torch.Tensor, C: torch.Tensor, seqlen: int) -> torch.Tensor:
    """H3's shift SSM (the state a shift register fed by ``B``, read by ``C``) as an FIR filter: ``B, C (d, N)`` ->
    ``(d, seqlen)``, the correlation of B and C (N taps, zero beyond)."""
    n = B.shape[-1]
    B_f, C_f = torch.fft.rfft(B, n=2 * n), torch.fft.rfft(C, n=2 * n)
    k = torch.fft.irfft(B_f.conj() * C_f, n=2 * n)[..., : min(n, seqlen)]
    return torch.nn.functional.pad(k, (0, seqlen - k.shape[-1]))
