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
    """Warp counts the fused (whole row on chip) kernels are tuned over on a GPU, per transform size: their DFT tiles
    grow with N, so the best count does too. One config under the interpreter, which cannot autotune."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config({}, num_warps=4)]
    return [triton.Config({}, num_warps=w, num_stages=1) for w in (4, 8, 16)]


def factors(seqlen: int) -> tuple[int, int]:
    """(N1, N2) with N1 * N2 >= 2 * seqlen, both powers of two; tiles of at least 16 x 16 (``tl.dot`` on GPUs)."""
    n = max(512, 1 << (2 * seqlen - 1).bit_length())
    log_n = n.bit_length() - 1
    n1 = 1 << ((log_n + 1) // 2)
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
def load_dft_tiles(f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr, twi_ptr, N1: tl.constexpr, N2: tl.constexpr):
    """The on-chip constants of the fused kernels: F1 restricted to the non-zero half of the input (N1, N1/2), F1
    restricted to the kept half of the output (N1/2, N1), the twiddles (N1, N2) and F2 (N2, N2)."""
    H1: tl.constexpr = N1 // 2
    r_half = tl.arange(0, H1)
    r_full = tl.arange(0, N1)
    cols = tl.arange(0, N2)
    f1_in = r_full[:, None] * N1 + r_half[None, :]
    f1_out = r_half[:, None] * N1 + r_full[None, :]
    tw = r_full[:, None] * N2 + cols[None, :]
    f2 = cols[:, None] * N2 + cols[None, :]
    return (
        tl.load(f1r_ptr + f1_in),
        tl.load(f1i_ptr + f1_in),
        tl.load(f1r_ptr + f1_out),
        tl.load(f1i_ptr + f1_out),
        tl.load(twr_ptr + tw),
        tl.load(twi_ptr + tw),
        tl.load(f2r_ptr + f2),
        tl.load(f2i_ptr + f2),
    )


@triton.jit
def half_row_positions(N1: tl.constexpr, N2: tl.constexpr):
    """Positions n = N2 n1 + n2 of the non-zero (input) / kept (output) half: an (N1/2, N2) tile."""
    return tl.arange(0, N1 // 2)[:, None] * N2 + tl.arange(0, N2)[None, :]


@triton.jit
def spectrum_tile_offsets(N1: tl.constexpr, N2: tl.constexpr):
    """Offsets of an (N1, N2) spectrum laid out [k1, k2]."""
    return tl.arange(0, N1)[:, None] * N2 + tl.arange(0, N2)[None, :]


@triton.jit
def dft_of_half(x, f1r_in, f1i_in, twr, twi, f2r, f2i, DOT: tl.constexpr):
    """Spectrum (real, imag planes (N1, N2)) of a row whose non-zero half is ``x: (N1/2, N2)``."""
    ar = tl.dot(f1r_in, x, input_precision=DOT)
    ai = tl.dot(f1i_in, x, input_precision=DOT)
    br = ar * twr - ai * twi
    bi = ar * twi + ai * twr
    zr = tl.dot(br, f2r, input_precision=DOT) - tl.dot(bi, f2i, input_precision=DOT)
    zi = tl.dot(br, f2i, input_precision=DOT) + tl.dot(bi, f2r, input_precision=DOT)
    return zr, zi


@triton.jit
def inverse_dft_to_half(yr, yi, f1r_out, f1i_out, twr, twi, f2r, f2i, inv_n, DOT: tl.constexpr):
    """First half (N1/2, N2) of the real inverse transform of the spectrum (yr, yi)."""
    pr = tl.dot(yr, f2r, input_precision=DOT) + tl.dot(yi, f2i, input_precision=DOT)
    pi = tl.dot(yi, f2r, input_precision=DOT) - tl.dot(yr, f2i, input_precision=DOT)
    qr = pr * twr + pi * twi
    qi = pi * twr - pr * twi
    return (tl.dot(f1r_out, qr, input_precision=DOT) + tl.dot(f1i_out, qi, input_precision=DOT)) * inv_n
