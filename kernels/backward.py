"""Backward of the gated long convolution ``y = post * (conv(u, h) + D u)``, ``u = pre * v``, in Triton.

With ``g = post * dy`` (the gradient reaching the convolution):

    du     = corr(g, h) + D g          (the same transform with conj(H))
    dv     = pre * du,   d_pre = v * du
    d_post = dy * (conv(u, h) + D u)   (recomputed, not stored by the forward)
    dh[j]  = sum_b sum_t g[t] u[t - j] = IDFT( sum_b G_b conj(U_b) )[j]   (the batch sum taken on spectra)
    dD     = sum_b sum_t g[t] u[t] = dh[0]   (lag 0 of the same correlation)

Up to MAX_FUSED_LEN two kernels do it with whole rows on chip: one program per (batch, channel) row for the input
gradients, and programs over (channel, spectrum tile, batch split) for the filter gradient, each writing a partial
``dh`` that is summed afterwards (no batch loop serialises a channel, no atomics: deterministic). Where float32
data leaves them no spill-free plan (see .plans) torch.fft takes over; beyond MAX_FUSED_LEN the multi-pass kernels
do the same steps through scratch memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dft import (
    column_dft_rows,
    dft_constants,
    dot_precision,
    factors,
    filter_spectrum,
    filtered_row,
    fused_launch_configs,
    half_row_positions,
    inverse_column_dft_rows,
    load_gated,
    plan_pruner,
    row_dft_slice,
)
from .fftconv import fits_one_program
from .multipass import fftconv_rows_multipass, filter_gradient_multipass
from .plans import fused_plan


@triton.autotune(
    configs=fused_launch_configs(),
    key=["N1", "N2", "RB", "CB", "RELOAD", "HAS_PRE", "HAS_POST", "HAS_D", "DOT"],
    prune_configs_by=plan_pruner("fused_backward_inputs"),
)
@triton.jit
def _input_gradient_kernel(
    dy_ptr,
    v_ptr,
    pre_ptr,
    post_ptr,
    d_ptr,
    hr_ptr,
    hi_ptr,
    dv_ptr,
    dpre_ptr,
    dpost_ptr,
    f1r_ptr,
    f1i_ptr,
    f2r_ptr,
    f2i_ptr,
    twr_ptr,
    twi_ptr,
    C,
    L,
    inv_n,
    N1: tl.constexpr,
    N2: tl.constexpr,
    RB: tl.constexpr,
    CB: tl.constexpr,
    RELOAD: tl.constexpr,
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    HAS_D: tl.constexpr,
    DOT: tl.constexpr,
):
    """dv, d_pre, d_post of one (batch, channel) row. Two passes over the spectrum blocks (the convolution for
    d_post, the correlation for the rest), each holding one accumulator: the live registers of the forward."""
    row = tl.program_id(0)
    channel = row % C
    pos = half_row_positions(N1, N2)
    valid = pos < L
    base = row.to(tl.int64) * L
    h_base = channel.to(tl.int64) * (N1 * N2)
    if HAS_D:
        d = tl.load(d_ptr + channel).to(tl.float32)
    if HAS_POST:
        inner = filtered_row(
            v_ptr, pre_ptr, base + pos, valid, hr_ptr, hi_ptr, h_base, f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr,
            twi_ptr, N1, N2, RB, CB, HAS_PRE, False, DOT, RELOAD,
        )  # fmt: skip
        inner = inner * inv_n
        if HAS_D:
            inner = inner + d * load_gated(v_ptr, pre_ptr, base + pos, valid, HAS_PRE)
        dy = tl.load(dy_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
        tl.store(dpost_ptr + base + pos, (dy * inner).to(dpost_ptr.dtype.element_ty), mask=valid)
    du = filtered_row(  # the correlation: conj(H)
        dy_ptr, post_ptr, base + pos, valid, hr_ptr, hi_ptr, h_base, f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr,
        twi_ptr, N1, N2, RB, CB, HAS_POST, True, DOT, RELOAD,
    )  # fmt: skip
    du = du * inv_n
    if HAS_D:
        du = du + d * load_gated(dy_ptr, post_ptr, base + pos, valid, HAS_POST)
    if HAS_PRE:
        v = tl.load(v_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
        tl.store(dpre_ptr + base + pos, (du * v).to(dpre_ptr.dtype.element_ty), mask=valid)
        du = du * tl.load(pre_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
    tl.store(dv_ptr + base + pos, du.to(dv_ptr.dtype.element_ty), mask=valid)


@triton.autotune(
    configs=fused_launch_configs(),
    key=["N1", "N2", "RB", "CB", "RELOAD", "HAS_PRE", "HAS_POST", "DOT"],
    prune_configs_by=plan_pruner("fused_backward_filter"),
)
@triton.jit
def _filter_gradient_kernel(
    dy_ptr,
    v_ptr,
    pre_ptr,
    post_ptr,
    dh_ptr,
    f1r_ptr,
    f1i_ptr,
    f2r_ptr,
    f2i_ptr,
    twr_ptr,
    twi_ptr,
    B,
    C,
    L,
    inv_n,
    N1: tl.constexpr,
    N2: tl.constexpr,
    RB: tl.constexpr,
    CB: tl.constexpr,
    RELOAD: tl.constexpr,
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    DOT: tl.constexpr,
):
    """Partial filter gradient of one channel: the (RB, CB) tile at spectrum rows k0 and columns c0 of
    sum_b G_b conj(U_b) over the batch rows b = split, split + splits, ..., taken back to time (without the 1/N) into
    ``dh[part, channel]``; program_id(1) = part = (split * row blocks + row block) * column blocks + column block.
    The parts are summed by the caller (the inverse transform is linear)."""
    channel = tl.program_id(0)
    part = tl.program_id(1)
    col_blocks: tl.constexpr = N2 // CB
    tiles: tl.constexpr = (N1 // RB) * col_blocks
    c0 = (part % col_blocks) * CB
    k0 = ((part % tiles) // col_blocks) * RB
    split = part // tiles
    splits = tl.num_programs(1) // tiles
    pos = half_row_positions(N1, N2)
    valid = pos < L
    cr = tl.zeros((RB, CB), dtype=tl.float32)
    ci = tl.zeros((RB, CB), dtype=tl.float32)
    for b in range(split, B, splits):
        base = (b * C + channel).to(tl.int64) * L
        u = load_gated(v_ptr, pre_ptr, base + pos, valid, HAS_PRE)
        br, bi = column_dft_rows(u, k0, f1r_ptr, f1i_ptr, twr_ptr, twi_ptr, N1, N2, RB, DOT, RELOAD)
        ur, ui = row_dft_slice(br, bi, c0, f2r_ptr, f2i_ptr, N2, CB, False, DOT, RELOAD)
        g = load_gated(dy_ptr, post_ptr, base + pos, valid, HAS_POST)
        br, bi = column_dft_rows(g, k0, f1r_ptr, f1i_ptr, twr_ptr, twi_ptr, N1, N2, RB, DOT, RELOAD)
        gr, gi = row_dft_slice(br, bi, c0, f2r_ptr, f2i_ptr, N2, CB, False, DOT, RELOAD)
        cr += gr * ur + gi * ui
        ci += gi * ur - gr * ui
    pr, pi = row_dft_slice(cr, ci, c0, f2r_ptr, f2i_ptr, N2, CB, True, DOT, RELOAD)
    dh = inverse_column_dft_rows(pr, pi, k0, f1r_ptr, f1i_ptr, twr_ptr, twi_ptr, N1, N2, RB, DOT, RELOAD)
    tl.store(dh_ptr + (part * C + channel).to(tl.int64) * L + pos, dh * inv_n, mask=valid)


def filter_gradient_splits(batch: int, channels: int, tiles: int, device: torch.device) -> int:
    """Batch splits of the filter-gradient kernel: enough programs (channels x spectrum tiles x splits) for about
    four per streaming multiprocessor."""
    if device.type != "cuda":
        return 1
    wanted = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(batch, -(-wanted // (channels * tiles))))


def fused_backward_plans(seqlen: int, dtype: torch.dtype):
    """The spill-free plans of the two fused backward kernels at this length and data dtype, or None where either
    is missing (float32 beyond N = 1024, or beyond the fused lengths)."""
    if not fits_one_program(seqlen):
        return None
    n1, n2 = factors(seqlen)
    dot = dot_precision(dtype)
    inputs, filters = fused_plan("fused_backward_inputs", n1, n2, dot), fused_plan("fused_backward_filter", n1, n2, dot)
    return None if inputs is None or filters is None else (inputs, filters)


def _fused_backward(dy, v, h, D, pre_gate, post_gate, dv, d_pre, d_post) -> torch.Tensor:
    B, C, L = v.shape
    n1, n2 = factors(L)
    dot = dot_precision(v.dtype)
    inputs_plan, filter_plan = fused_backward_plans(L, v.dtype)
    hr, hi = filter_spectrum(h, L)
    constants = dft_constants(n1, n2, v.device)
    flags = dict(N1=n1, N2=n2, HAS_PRE=pre_gate is not None, HAS_POST=post_gate is not None, DOT=dot)
    pre = v if pre_gate is None else pre_gate
    post = v if post_gate is None else post_gate
    _input_gradient_kernel[(B * C,)](
        dy,
        v,
        pre,
        post,
        v if D is None else D,
        hr,
        hi,
        dv,
        dv if d_pre is None else d_pre,
        dv if d_post is None else d_post,
        *constants,
        C,
        L,
        1.0 / (n1 * n2),
        RB=inputs_plan.rows,
        CB=inputs_plan.columns,
        RELOAD=inputs_plan.reload,
        HAS_D=D is not None,
        **flags,
    )
    rb, cb = filter_plan.rows, filter_plan.columns
    tiles = (n1 // rb) * (n2 // cb)
    parts = tiles * filter_gradient_splits(B, C, tiles, v.device)
    dh_parts = torch.empty(parts, C, L, device=v.device, dtype=torch.float32)
    _filter_gradient_kernel[(C, parts)](
        dy,
        v,
        pre,
        post,
        dh_parts,
        *constants,
        B,
        C,
        L,
        1.0 / (n1 * n2),
        RB=rb,
        CB=cb,
        RELOAD=filter_plan.reload,
        **flags,
    )
    return dh_parts.sum(0)


def _torch_fft_backward(dy, v, h, D, pre_gate, post_gate, dv, d_pre, d_post) -> torch.Tensor:
    """The same gradients by torch.fft (cuFFT on a GPU), in float32: the engine where no fused kernel runs without
    spilling registers (float32 data beyond L = 512). Transforms of size 2L, so the circular products are causal."""
    L = v.shape[-1]
    n = 2 * L
    f32 = torch.float32
    u = v.to(f32) if pre_gate is None else v.to(f32) * pre_gate.to(f32)
    g = dy.to(f32) if post_gate is None else dy.to(f32) * post_gate.to(f32)
    H = torch.fft.rfft(h[..., :L].to(f32), n=n)
    U, G = torch.fft.rfft(u, n=n), torch.fft.rfft(g, n=n)
    skip = None if D is None else D.to(f32)[:, None]
    if post_gate is not None:
        inner = torch.fft.irfft(U * H, n=n)[..., :L]
        d_post.copy_(dy.to(f32) * (inner if skip is None else inner + skip * u))
    du = torch.fft.irfft(G * H.conj(), n=n)[..., :L]
    if skip is not None:
        du = du + skip * g
    if pre_gate is not None:
        d_pre.copy_(du * v.to(f32))
        du = du * pre_gate.to(f32)
    dv.copy_(du)
    return torch.fft.irfft((G * U.conj()).sum(0), n=n)[..., :L]


def _multipass_backward(dy, v, h, D, pre_gate, post_gate, dv, d_pre, d_post) -> torch.Tensor:
    spectrum = filter_spectrum(h, v.shape[-1])
    # du = corr(dy * post, h) + D (dy * post): the forward with the gates moved; dv = pre * du, d_pre = v * du
    fftconv_rows_multipass(
        dy,
        spectrum,
        D,
        pre_gate=post_gate,
        post_gate=pre_gate,
        conj=True,
        out=dv,
        aux=None if pre_gate is None else v,
        aux_out=d_pre,
    )
    if post_gate is not None:
        fftconv_rows_multipass(v, spectrum, D, pre_gate=pre_gate, post_gate=dy, out=d_post)
    return filter_gradient_multipass(dy, post_gate, v, pre_gate)


def backward_engine(seqlen: int, dtype: torch.dtype):
    """The fused kernels where both have a spill-free plan, the multi-pass kernels beyond the fused lengths, else
    torch.fft."""
    if fused_backward_plans(seqlen, dtype) is not None:
        return _fused_backward
    return _torch_fft_backward if fits_one_program(seqlen) else _multipass_backward


def long_conv_backward(
    dy: torch.Tensor,
    v: torch.Tensor,
    h: torch.Tensor,
    D: torch.Tensor | None,
    pre_gate: torch.Tensor | None,
    post_gate: torch.Tensor | None,
):
    """Gradients ``(dv, dh, dD, d_pre, d_post)``; the ones for absent inputs are empty tensors."""
    B, C, L = v.shape
    dy, v = dy.contiguous(), v.contiguous()
    pre_gate = None if pre_gate is None else pre_gate.contiguous()
    post_gate = None if post_gate is None else post_gate.contiguous()
    D = None if D is None else D.contiguous()
    dv = torch.empty_like(v)
    d_pre = None if pre_gate is None else torch.empty_like(pre_gate)
    d_post = None if post_gate is None else torch.empty_like(post_gate)
    dh_full = backward_engine(L, v.dtype)(dy, v, h, D, pre_gate, post_gate, dv, d_pre, d_post)
    dh = torch.zeros_like(h, dtype=torch.float32)
    taps = min(h.shape[-1], L)
    dh[..., :taps] = dh_full[..., :taps]
    dD = v.new_empty(0) if D is None else dh_full[:, 0].to(D.dtype)
    return (
        dv,
        dh.to(h.dtype),
        dD,
        v.new_empty(0) if d_pre is None else d_pre,
        v.new_empty(0) if d_post is None else d_post,
    )
