"""The four-step (Monarch) DFT as matrix products: constants and the Triton building blocks every kernel shares.

A row of length L is zero-padded to N = N1 * N2 >= 2L (powers of two) and laid out as a matrix x[n1, n2] with
n = N2 * n1 + n2, so the rows n1 >= N1/2 are the zero padding. Its spectrum, indexed k = k1 + N1 * k2, is

    X = (F_N1[:, :N1/2] @ x[:N1/2]) * W_N^(k1 n2) @ F_N2

and the inverse keeps only the first half of the positions (the causal output; the rest is wrap-around):

    y[n1, n2] = Re( conj(F_N1)[:N1/2] @ ((Y @ conj(F_N2)) * W_N^(-k1 n2)) ) / N.

Real and imaginary planes are kept separately and every DFT is a ``tl.dot`` (precision: :func:`dot_precision`).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from .plans import fused_plan

_CONSTANTS: dict[tuple, tuple[torch.Tensor, ...]] = {}


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision for data of ``dtype``: tensor cores wherever they stay within the error budget.
    Float32 data (1e-5 relative) gets three TF32 products per float32 product ("tf32x3", about float32 accuracy);
    half data (1e-2) one TF32 product. AMD GPUs, which lack tf32x3, use IEEE float32 FMAs, as does every call when
    HYENA_TRITON_DOT_PRECISION=ieee (to check the tensor-core paths against it). The interpreter computes every
    choice in full float32."""
    forced = os.environ.get("HYENA_TRITON_DOT_PRECISION")
    if forced:
        if forced not in ("ieee", "tf32", "tf32x3"):
            raise ValueError(f"HYENA_TRITON_DOT_PRECISION must be 'ieee', 'tf32' or 'tf32x3', got {forced!r}")
        return forced
    if torch.version.hip:
        return "ieee"
    return "tf32" if dtype in (torch.float16, torch.bfloat16) else "tf32x3"


def fused_launch_configs() -> list[triton.Config]:
    """Warp counts the fused (whole row on chip) kernels are tuned over on a GPU; :func:`plan_pruner` keeps those of
    the size's spill-free plan. One config under the interpreter, which cannot autotune."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config({}, num_warps=4)]
    return [triton.Config({}, num_warps=w, num_stages=1) for w in (4, 8)]


def plan_pruner(kernel: str) -> dict:
    """``prune_configs_by`` of a fused kernel's autotuner: only the warp counts of its plan (see :mod:`.plans`)."""

    def prune(configs, named_args, **kwargs):
        plan = fused_plan(kernel, kwargs["N1"], kwargs["N2"], kwargs["DOT"])
        return [config for config in configs if config.num_warps in plan.warps]

    return {"early_config_prune": prune}


def factors(seqlen: int) -> tuple[int, int]:
    """(N1, N2) with N1 * N2 >= 2 * seqlen, both powers of two, N1 <= N2 (wide rows: the row DFT runs on whole rows
    while the column DFT is taken a block of rows at a time, so a wide row keeps fewer values live per block) and
    N1 >= 32 (the kernels' tiles are at least 16 x 16, as ``tl.dot`` needs on GPUs)."""
    n = max(512, 1 << (2 * seqlen - 1).bit_length())
    n1 = 1 << max(5, (n.bit_length() - 1) // 2)
    return n1, n // n1


def dft_constants(n1: int, n2: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Real and imaginary planes of F_N1, F_N2 and the twiddles W_N^(k1 n2), in float32 (computed in float64)."""
    key = (n1, n2, str(device))
    if key not in _CONSTANTS:
        n = n1 * n2

        def dft(m: int) -> torch.Tensor:
            idx = torch.arange(m, dtype=torch.float64)
            return torch.exp(-2j * math.pi * torch.outer(idx, idx) / m)

        twiddle = torch.exp(
            -2j
            * math.pi
            * torch.outer(torch.arange(n1, dtype=torch.float64), torch.arange(n2, dtype=torch.float64))
            / n
        )
        planes = []
        for mat in (dft(n1), dft(n2), twiddle):
            planes += [mat.real.float().contiguous().to(device), mat.imag.float().contiguous().to(device)]
        _CONSTANTS[key] = tuple(planes)
    return _CONSTANTS[key]


def filter_spectrum(h: torch.Tensor, seqlen: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectrum of ``h: (C, Lh)`` at the kernels' FFT size, laid out ``[k1, k2]`` (k = k1 + N1 k2), as real and
    imaginary planes ``(C, N1, N2)``; computed once per call and shared by every row of the batch."""
    n1, n2 = factors(seqlen)
    spec = torch.fft.fft(h[..., :seqlen].float(), n=n1 * n2)
    spec = spec.view(h.shape[0], n2, n1).transpose(1, 2)
    return spec.real.contiguous(), spec.imag.contiguous()


@triton.jit
def half_row_positions(N1: tl.constexpr, N2: tl.constexpr):
    """Positions n = N2 n1 + n2 of the non-zero (input) / kept (output) half: an (N1/2, N2) tile."""
    return tl.arange(0, N1 // 2)[:, None] * N2 + tl.arange(0, N2)[None, :]


@triton.jit
def load_gated(x_ptr, gate_ptr, offsets, mask, HAS_GATE: tl.constexpr):
    """``x * gate`` (or ``x``) at ``offsets``, in float32; zero where ``mask`` is false."""
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_GATE:
        x = x * tl.load(gate_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    return x


@triton.jit
def column_dft_rows(
    x,
    k0,
    f1r_ptr,
    f1i_ptr,
    twr_ptr,
    twi_ptr,
    N1: tl.constexpr,
    N2: tl.constexpr,
    RB: tl.constexpr,
    DOT: tl.constexpr,
    RELOAD: tl.constexpr,
):
    """Step 1 for the spectrum rows k1 = k0 .. k0 + RB of a row whose non-zero half is ``x: (N1/2, N2)``: the column
    DFT restricted to those rows, times the twiddles; real and imaginary planes (RB, N2)."""
    k1 = k0 + tl.arange(0, RB)
    f1 = k1[:, None] * N1 + tl.arange(0, N1 // 2)[None, :]
    ar = tl.dot(tl.load(f1r_ptr + f1, volatile=RELOAD), x, input_precision=DOT)
    ai = tl.dot(tl.load(f1i_ptr + f1, volatile=RELOAD), x, input_precision=DOT)
    tw = k1[:, None] * N2 + tl.arange(0, N2)[None, :]
    twr = tl.load(twr_ptr + tw, volatile=RELOAD)
    twi = tl.load(twi_ptr + tw, volatile=RELOAD)
    return ar * twr - ai * twi, ar * twi + ai * twr


@triton.jit
def complex_dot(ar, ai, br, bi, DOT: tl.constexpr):
    """(ar + i ai) @ (br + i bi) as four real ``tl.dot``: real and imaginary planes."""
    real = tl.dot(ar, br, input_precision=DOT) - tl.dot(ai, bi, input_precision=DOT)
    imag = tl.dot(ar, bi, input_precision=DOT) + tl.dot(ai, br, input_precision=DOT)
    return real, imag


@triton.jit
def row_dft_slice(
    xr,
    xi,
    c0,
    f2r_ptr,
    f2i_ptr,
    N2: tl.constexpr,
    CB: tl.constexpr,
    INVERSE: tl.constexpr,
    DOT: tl.constexpr,
    RELOAD: tl.constexpr,
):
    """Step 2 on a slice of spectrum columns k2 = c0 .. c0 + CB. Forward: those columns of the row DFT of
    ``(xr, xi): (RB, N2)``, planes (RB, CB). Inverse: the contribution of the spectrum columns ``(xr, xi): (RB, CB)``
    to the inverse row DFT, planes (RB, N2) (rows c0 .. c0 + CB of conj(F2)); summed over all slices it is the whole
    inverse."""
    full = tl.arange(0, N2)
    part = c0 + tl.arange(0, CB)
    if INVERSE:
        f2 = part[:, None] * N2 + full[None, :]
    else:
        f2 = full[:, None] * N2 + part[None, :]
    f2r = tl.load(f2r_ptr + f2, volatile=RELOAD)
    f2i = tl.load(f2i_ptr + f2, volatile=RELOAD)
    if INVERSE:
        f2i = -f2i
    return complex_dot(xr, xi, f2r, f2i, DOT)


@triton.jit
def inverse_column_dft_rows(
    pr,
    pi,
    k0,
    f1r_ptr,
    f1i_ptr,
    twr_ptr,
    twi_ptr,
    N1: tl.constexpr,
    N2: tl.constexpr,
    RB: tl.constexpr,
    DOT: tl.constexpr,
    RELOAD: tl.constexpr,
):
    """Inverse of step 1 for the spectrum rows k0 .. k0 + RB (``pr, pi: (RB, N2)``): conjugate twiddles, then their
    contribution to the kept half (N1/2, N2) of the real inverse column DFT, without the 1/N."""
    k1 = k0 + tl.arange(0, RB)
    tw = k1[:, None] * N2 + tl.arange(0, N2)[None, :]
    twr = tl.load(twr_ptr + tw, volatile=RELOAD)
    twi = tl.load(twi_ptr + tw, volatile=RELOAD)
    qr = pr * twr + pi * twi
    qi = pi * twr - pr * twi
    f1 = tl.arange(0, N1 // 2)[:, None] * N1 + k1[None, :]
    return tl.dot(tl.load(f1r_ptr + f1, volatile=RELOAD), qr, input_precision=DOT) + tl.dot(
        tl.load(f1i_ptr + f1, volatile=RELOAD), qi, input_precision=DOT
    )


@triton.jit
def filtered_inverse_rows(
    br,
    bi,
    k0,
    h_ptr_r,
    h_ptr_i,
    h_base,
    f2r_ptr,
    f2i_ptr,
    N2: tl.constexpr,
    RB: tl.constexpr,
    CB: tl.constexpr,
    CONJ: tl.constexpr,
    DOT: tl.constexpr,
    RELOAD: tl.constexpr,
):
    """Steps 2, filter, inverse 2 for one block of spectrum rows: the row DFT of ``(br, bi): (RB, N2)`` times the
    filter spectrum rows k0 .. k0 + RB (conj(H) if CONJ), back through the inverse row DFT; (RB, N2) planes. Taken
    CB spectrum columns at a time, so only a (RB, CB) slice of the spectrum and two (N2, CB) slices of F2 are live."""
    pr = tl.zeros((RB, N2), dtype=tl.float32)
    pi = tl.zeros((RB, N2), dtype=tl.float32)
    for c0 in range(0, N2, CB):
        zr, zi = row_dft_slice(br, bi, c0, f2r_ptr, f2i_ptr, N2, CB, False, DOT, RELOAD)
        h = h_base + (k0 + tl.arange(0, RB))[:, None] * N2 + c0 + tl.arange(0, CB)[None, :]
        hr = tl.load(h_ptr_r + h)
        hi = tl.load(h_ptr_i + h)
        if CONJ:
            hi = -hi
        dr, di = row_dft_slice(zr * hr - zi * hi, zr * hi + zi * hr, c0, f2r_ptr, f2i_ptr, N2, CB, True, DOT, RELOAD)
        pr += dr
        pi += di
    return pr, pi


@triton.jit
def filtered_row(
    x_ptr,
    gate_ptr,
    offsets,
    mask,
    h_ptr_r,
    h_ptr_i,
    h_base,
    f1r_ptr,
    f1i_ptr,
    f2r_ptr,
    f2i_ptr,
    twr_ptr,
    twi_ptr,
    N1: tl.constexpr,
    N2: tl.constexpr,
    RB: tl.constexpr,
    CB: tl.constexpr,
    HAS_GATE: tl.constexpr,
    CONJ: tl.constexpr,
    DOT: tl.constexpr,
    RELOAD: tl.constexpr,
):
    """IDFT(DFT(x * gate) * H) of one row (conj(H) if CONJ), on its kept half (N1/2, N2), without the 1/N: one
    block of RB spectrum rows at a time through one accumulator. The gated input is reloaded per block (from cache)
    rather than held: fewer live registers."""
    acc = tl.zeros((N1 // 2, N2), dtype=tl.float32)
    for k0 in range(0, N1, RB):
        x = load_gated(x_ptr, gate_ptr, offsets, mask, HAS_GATE)
        br, bi = column_dft_rows(x, k0, f1r_ptr, f1i_ptr, twr_ptr, twi_ptr, N1, N2, RB, DOT, RELOAD)
        pr, pi = filtered_inverse_rows(
            br, bi, k0, h_ptr_r, h_ptr_i, h_base, f2r_ptr, f2i_ptr, N2, RB, CB, CONJ, DOT, RELOAD
        )
        acc += inverse_column_dft_rows(pr, pi, k0, f1r_ptr, f1i_ptr, twr_ptr, twi_ptr, N1, N2, RB, DOT, RELOAD)
    return acc
