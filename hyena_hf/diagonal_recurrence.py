"""Diagonal linear recurrences ``s <- p s + u`` with complex poles ``p``: the impulse responses the modal filter
and H3's SSM convolve with, and the state a prompt leaves behind (the prefill of recurrent decoding); H3's
discretisation and its shift SSM."""

from __future__ import annotations

import math

import torch


def modal_impulse_response(poles: torch.Tensor, residues: torch.Tensor, seqlen: int) -> torch.Tensor:
    """(C, N) poles and residues -> (C, seqlen) real filters Re sum_n R_n p_n^t.

    With t = j m + i (m about sqrt(seqlen)), R p^t = (R p^(jm)) p^i, so each channel's filter is the real part of a
    (seqlen/m, N) by (N, m) complex matrix product, Re(a b) = Re a Re b - Im a Im b: one real GEMM of inner size 2N,
    and (seqlen/m + m) powers per mode instead of seqlen (which cost 80 % of a modal model's forward on CPU). The
    powers come from :func:`_polar_table`, real and imaginary parts already apart (no complex tensor to split)."""
    m = _inner_length(seqlen)
    real, log = poles.real.dtype, _log_poles(poles)
    outer = _polar_table(log, m * torch.arange(-(-seqlen // m), device=poles.device), real)  # (C, 2, N, J)
    inner = _polar_table(log, torch.arange(m, device=poles.device), real)  # (C, 2, N, m)
    re, im = residues.real.to(real).unsqueeze(-1), residues.imag.to(real).unsqueeze(-1)
    # rows [Re(R p^jm), -Im(R p^jm)]: the complex product by the residue in real arithmetic (a log of R would give
    # NaN gradients at R = 0, e.g. a zero-initialised SSM)
    cos, sin = outer.unbind(1)
    rows = torch.stack([torch.addcmul(re * cos, im, sin, value=-1), torch.addcmul(-re * sin, im, cos, value=-1)], 1)
    return torch.matmul(rows.flatten(1, 2).transpose(-1, -2), inner.flatten(1, 2)).flatten(-2)[..., :seqlen]


# Below this log-magnitude a float32 power is flushed to 0: a term e^-40 = 4e-18 times its residue (or input) is far
# below float32's resolution of a filter (or state) summing such terms at full weight, and the flush keeps denormals
# (|p|^t underflowing for fast poles, and their products in the GEMM) out of exp and the GEMM, which they slowed 40x
# and 4x (H3's SSM at 32K tokens).
FLOAT32_POWER_FLUSH = -40.0


def _log_poles(poles: torch.Tensor) -> torch.Tensor:
    """log p of ``poles (C, N)`` as ``(C, N, 1)``, in complex128 where the device has float64 (MPS has not): the
    powers below are taken through it so that gradients flow; p = 0 is nudged to 1e-30 (log 0 = -inf would give NaN
    at e = 0)."""
    wide = poles.to(torch.complex128) if poles.device.type in ("cpu", "cuda") else poles
    safe = torch.where(wide.abs() > 1e-30, wide, torch.full_like(wide, 1e-30))
    return torch.log(safe).unsqueeze(-1)


def _polar_table(log: torch.Tensor, exponents: torch.Tensor, real: torch.dtype) -> torch.Tensor:
    """``|p|^e [cos(e arg p), sin(e arg p)]`` for the poles' ``log (C, N, 1)`` (:func:`_log_poles`) and integer
    ``exponents (E,)`` -> ``(C, 2, N, E)`` in ``real``. The angles e arg p and log-magnitudes e log|p| are formed in
    float64 (in float32 alone the angles are off by e * 6e-8 radians: 0.06 at e = 1M) and the cosines taken there
    (vectorised, with exact range reduction); the sine is the cosine a quarter turn later, so both come from one
    broadcast of the angles. Real and imaginary parts stay apart: a complex tensor of powers cost 2-3x more in
    building and splitting than the values themselves (H3's SSM kernel at 8K tokens; ``torch.polar`` alone 2.2x the
    real exp / cos / sin). In float32, powers below e^FLOAT32_POWER_FLUSH are 0."""
    e = exponents.to(log.real.dtype)
    quarter_turns = torch.tensor([0.0, -math.pi / 2], dtype=e.dtype, device=e.device).view(2, 1, 1)
    cosines = torch.addcmul(quarter_turns, log.imag.unsqueeze(1), e).cos().to(real)  # (C, 2, N, E)
    log_magnitude = log.real * e  # (C, N, E)
    if real == torch.float32:
        log_magnitude = log_magnitude.masked_fill(log_magnitude < FLOAT32_POWER_FLUSH, -math.inf)
    return cosines * log_magnitude.to(real).exp().unsqueeze(1)


def _complex(table: torch.Tensor) -> torch.Tensor:
    """A :func:`_polar_table` ``(C, 2, N, E)`` as the complex powers ``(C, N, E)``."""
    return torch.complex(table[:, 0], table[:, 1])


def _inner_length(seqlen: int) -> int:
    """The block length m of the t = j m + i split: about sqrt(seqlen), which minimises the exponentials."""
    return max(1, math.isqrt(max(seqlen - 1, 0)) + 1)


def decayed_sum(u: torch.Tensor, poles: torch.Tensor) -> torch.Tensor:
    """sum_t p^(T-1-t) u_t for real ``u: (B, C, T)`` and ``poles: (C, N)`` -> ``(B, C, N)`` complex: the state a
    diagonal recurrence ``s <- p s + u`` reaches after T inputs.

    The last J m inputs (m about sqrt(T)) split as t = T - J m + j m + i, the exponent as (J-1-j) m + (m-1-i): a real
    GEMM of each channel's (J, m) inputs by its (m, 2N) powers p^(m-1-i), then a sum over j weighted by p^((J-1-j) m);
    the first T - J m inputs (fewer than m) are summed directly. Memory stays O(C N (J + m)) beyond the input."""
    seqlen = u.shape[-1]
    m = _inner_length(seqlen)
    blocks, head = divmod(seqlen, m)
    real = poles.real.dtype
    u, log = u.to(real), _log_poles(poles)
    inner = _polar_table(log, torch.arange(m - 1, -1, -1, device=u.device), real)  # (C, 2, N, m)
    columns = inner.flatten(1, 2).transpose(-1, -2)  # (C, m, 2N): [Re, Im] of p^(m-1-i)
    by_block = torch.matmul(u[..., head:].unflatten(-1, (blocks, m)), columns)  # (B, C, J, 2N)
    by_block = torch.complex(*by_block.chunk(2, dim=-1))
    weights = _complex(_polar_table(log, m * torch.arange(blocks - 1, -1, -1, device=u.device), real))  # (C, N, J)
    state = torch.einsum("bcjn,cnj->bcn", by_block, weights)
    if head:  # the first inputs, decayed by p^(T-1-t) = p^(J m) p^(head-1-t)
        first = torch.einsum("bct,cnt->bcn", u[..., :head].to(poles.dtype), _complex(inner)[..., m - head :])
        decay = _complex(_polar_table(log, torch.tensor([blocks * m], device=u.device), real))[..., 0]
        state = state + first * decay
    return state


def pole_powers(poles: torch.Tensor, exponent: int) -> torch.Tensor:
    """p^exponent for ``poles (C, N)``, complex ``(C, N)`` (through the same float64 angles as the tables above)."""
    table = _polar_table(_log_poles(poles), torch.tensor([exponent], device=poles.device), poles.real.dtype)
    return _complex(table)[..., 0]


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
    ``(d, min(N, seqlen))``, the correlation of B and C: its N taps only (the filter is zero beyond them, and the
    long convolution of a short filter runs FFTs of about seqlen + N points, not 2 seqlen)."""
    n = B.shape[-1]
    B_f, C_f = torch.fft.rfft(B, n=2 * n), torch.fft.rfft(C, n=2 * n)
    return torch.fft.irfft(B_f.conj() * C_f, n=2 * n)[..., : min(n, seqlen)]
