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
    real = poles.real.dtype
    outer = _polar_table(poles, m * torch.arange(-(-seqlen // m), device=poles.device), real)  # (C, 2, N, J)
    inner = _polar_table(poles, torch.arange(m, device=poles.device), real)  # (C, 2, N, m)
    re, im = residues.real.to(real).unsqueeze(-1), residues.imag.to(real).unsqueeze(-1)
    # rows [Re(R p^jm), -Im(R p^jm)]: the complex product by the residue in real arithmetic (a log of R would give
    # NaN gradients at R = 0, e.g. a zero-initialised SSM)
    cos, sin = outer.unbind(1)
    rows = torch.stack([torch.addcmul(re * cos, im, sin, value=-1), torch.addcmul(-re * sin, im, cos, value=-1)], 1)
    return torch.matmul(rows.flatten(1, 2).transpose(-1, -2), inner.flatten(1, 2)).flatten(-2)[..., :seqlen]


# Below this log-magnitude a float32 power is flushed to 0: e^-40 = 4e-18 of the residue is far below float32's
# resolution of a filter whose values are O(|R|), and the flush keeps denormals (|p|^t underflowing for fast poles,
# and their products in the GEMM) out of exp and the GEMM, which they slowed 40x and 4x (H3's SSM at 32K tokens).
FLOAT32_POWER_FLUSH = -40.0


def _polar_table(poles: torch.Tensor, exponents: torch.Tensor, real: torch.dtype) -> torch.Tensor:
    """``|p|^e [cos(e arg p), sin(e arg p)]`` for ``poles (C, N)`` and integer ``exponents (E,)`` -> ``(C, 2, N, E)``
    in ``real``. The angles e arg p and log-magnitudes e log|p| are formed in float64 (in float32 alone the angles are
    off by e * 6e-8 radians: 0.06 at e = 1M) and the cosines taken there (vectorised, with exact range reduction);
    the sine is the cosine a quarter turn later, so both come from one broadcast of the angles. Real and imaginary
    parts stay apart: a complex tensor of powers cost 2-3x more in building and splitting than the values themselves
    (H3's SSM kernel at 8K tokens). In float32, powers below e^FLOAT32_POWER_FLUSH are 0."""
    wide = poles.to(torch.complex128) if poles.device.type in ("cpu", "cuda") else poles  # MPS has no float64
    safe = torch.where(wide.abs() > 1e-30, wide, torch.full_like(wide, 1e-30))  # log 0 = -inf: NaN at e = 0
    log = torch.log(safe).unsqueeze(-1)  # (C, N, 1)
    e = exponents.to(log.real.dtype)
    quarter_turns = torch.tensor([0.0, -math.pi / 2], dtype=e.dtype, device=e.device).view(2, 1, 1)
    cosines = torch.addcmul(quarter_turns, log.imag.unsqueeze(1), e).cos().to(real)  # (C, 2, N, E)
    log_magnitude = log.real * e  # (C, N, E)
    if real == torch.float32:
        log_magnitude = log_magnitude.masked_fill(log_magnitude < FLOAT32_POWER_FLUSH, -math.inf)
    return cosines * log_magnitude.to(real).exp().unsqueeze(1)


def _inner_length(seqlen: int) -> int:
    """The block length m of the t = j m + i split: about sqrt(seqlen), which minimises the exponentials."""
    return max(1, math.isqrt(max(seqlen - 1, 0)) + 1)


def _powers(poles: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """``pole_powers`` evaluated in float64 (on CPU and CUDA) and returned in the poles' dtype: p^e through
    exp(e log p) in float32 loses e * 6e-8 radians of phase (0.06 at e = 1M); only O(C N sqrt(L)) values are computed
    here, so the wider type costs nothing measurable."""
    if poles.dtype == torch.complex128 or poles.device.type not in ("cpu", "cuda"):  # MPS has no float64
        return pole_powers(poles, exponents)
    return pole_powers(poles.to(torch.complex128), exponents.to(torch.float64)).to(poles.dtype)


def pole_powers(poles: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """(..., N) poles, (L,) exponents -> (..., N, L) p^e, through log so gradients flow; p = 0 is nudged to 1e-30
    (log 0 = -inf would give NaN at e = 0). In polar form, exp(e log|p|) and e arg(p), by the real exp / cos / sin
    (vectorised where the complex exp is not: a third of its time in float64 on CPU) and the two products stacked
    as the complex result (``torch.polar`` took 2.2x longer on CPU, 745K values: H3's SSM kernels at 8K tokens)."""
    safe = torch.where(poles.abs() > 1e-30, poles, torch.full_like(poles, 1e-30))
    log = torch.log(safe).unsqueeze(-1)
    magnitude, angle = torch.exp(log.real * exponents), log.imag * exponents
    return torch.view_as_complex(torch.stack([magnitude * torch.cos(angle), magnitude * torch.sin(angle)], dim=-1))


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
    u = u.to(real)
    inner = _powers(poles, torch.arange(m - 1, -1, -1, device=u.device, dtype=real))  # (C, N, m)
    columns = torch.cat([inner.real, inner.imag], dim=-2).transpose(-1, -2)  # (C, m, 2N)
    by_block = torch.matmul(u[..., head:].unflatten(-1, (blocks, m)), columns)  # (B, C, J, 2N)
    by_block = torch.complex(*by_block.chunk(2, dim=-1))
    weights = _powers(poles, m * torch.arange(blocks - 1, -1, -1, device=u.device, dtype=real))  # (C, N, J)
    state = torch.einsum("bcjn,cnj->bcn", by_block, weights)
    if head:  # the first inputs, decayed by p^(T-1-t) = p^(J m) p^(head-1-t)
        first = torch.einsum("bct,cnt->bcn", u[..., :head].to(poles.dtype), inner[..., m - head :])
        state = state + first * _powers(poles, torch.tensor([blocks * m], device=u.device, dtype=real))[..., 0]
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
    ``(d, min(N, seqlen))``, the correlation of B and C: its N taps only (the filter is zero beyond them, and the
    long convolution of a short filter runs FFTs of about seqlen + N points, not 2 seqlen)."""
    n = B.shape[-1]
    B_f, C_f = torch.fft.rfft(B, n=2 * n), torch.fft.rfft(C, n=2 * n)
    return torch.fft.irfft(B_f.conj() * C_f, n=2 * n)[..., : min(n, seqlen)]
