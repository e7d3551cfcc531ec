"""Fused gated FFT long convolution in Triton, forward: one program per (batch, channel) row.

    u = pre * v;   y = post * ( IDFT(DFT(u) * H)[:L] + D * u )

with the transforms of :mod:`.dft` (matrix products on chip). The whole row stays on chip, so the activations cross
memory once in and once out.
Arithmetic is float32 whatever the input dtype (inputs are cast right after loading).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dft import (
    dft_constants,
    dot_precision,
    factors,
    filtered_row,
    fused_launch_configs,
    half_row_positions,
    load_gated,
    plan_pruner,
)
from .multipass import fftconv_rows_multipass
from .plans import fused_plan


@triton.autotune(
    configs=fused_launch_configs(),
    key=["N1", "N2", "RB", "CB", "RELOAD", "HAS_PRE", "HAS_POST", "HAS_D", "DOT"],
    prune_configs_by=plan_pruner("fused_forward"),
)
@triton.jit
def _fftconv_row_kernel(
    v_ptr,
    pre_ptr,
    post_ptr,
    d_ptr,
    out_ptr,
    hr_ptr,
    hi_ptr,
    f1r_ptr,
    f1i_ptr,
    f2r_ptr,
    f2i_ptr,
    twr_ptr,
    twi_ptr,
    L,
    C,
    inv_n,
    N1: tl.constexpr,
    N2: tl.constexpr,
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    HAS_D: tl.constexpr,
    RB: tl.constexpr,
    CB: tl.constexpr,
    RELOAD: tl.constexpr,
    DOT: tl.constexpr,
):
    row = tl.program_id(0)
    channel = row % C
    pos = half_row_positions(N1, N2)
    valid = pos < L
    base = row.to(tl.int64) * L
    h_base = channel.to(tl.int64) * (N1 * N2)
    y = filtered_row(
        v_ptr, pre_ptr, base + pos, valid, hr_ptr, hi_ptr, h_base, f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr,
        twi_ptr, N1, N2, RB, CB, HAS_PRE, False, DOT, RELOAD,
    )  # fmt: skip
    y = y * inv_n
    if HAS_D:
        y = y + tl.load(d_ptr + channel).to(tl.float32) * load_gated(v_ptr, pre_ptr, base + pos, valid, HAS_PRE)
    if HAS_POST:
        y = y * tl.load(post_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
    tl.store(out_ptr + base + pos, y.to(out_ptr.dtype.element_ty), mask=valid)


# Lengths one program handles with the whole row on chip (N = 2L <= 64 x 64: the row, an accumulator and a slice of
# its spectrum in registers, see .plans); longer rows take the multi-pass kernels of .multipass.
MAX_FUSED_LEN = 2048


def fits_one_program(seqlen: int) -> bool:
    """Whether rows of ``seqlen`` tokens take the fused (whole row on chip) kernels."""
    return seqlen <= MAX_FUSED_LEN


def fftconv_rows(
    v: torch.Tensor,
    spectrum: tuple[torch.Tensor, torch.Tensor],
    D: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
    post_gate: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gated long convolution of ``v: (B, C, L)`` with the filter ``spectrum`` of :func:`.dft.filter_spectrum`.
    ``out`` (optional) receives the result."""
    B, C, L = v.shape
    if not fits_one_program(L):
        return fftconv_rows_multipass(v, spectrum, D, pre_gate, post_gate, out=out)
    n1, n2 = factors(L)
    dot = dot_precision(v.dtype)
    plan = fused_plan("fused_forward", n1, n2, dot)
    v = v.contiguous()
    out = torch.empty_like(v) if out is None else out
    hr, hi = spectrum
    _fftconv_row_kernel[(B * C,)](
        v,
        v if pre_gate is None else pre_gate.contiguous(),
        v if post_gate is None else post_gate.contiguous(),
        v if D is None else D.contiguous(),
        out,
        hr,
        hi,
        *dft_constants(n1, n2, v.device),
        L,
        C,
        1.0 / (n1 * n2),
        N1=n1,
        N2=n2,
        RB=plan.rows,
        CB=plan.columns,
        RELOAD=plan.reload,
        HAS_PRE=pre_gate is not None,
        HAS_POST=post_gate is not None,
        HAS_D=D is not None,
        DOT=dot,
    )
    return out
