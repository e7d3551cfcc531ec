"""Backward of the gated long convolution ``y = post * (conv(u, h) + D u)``, ``u = pre * v``, in Triton.

With ``g = post * dy`` (the gradient reaching the convolution):

    du     = corr(g, h) + D g          (the same transform with conj(H))
    dv     = pre * du,   d_pre = v * du
    d_post = dy * (conv(u, h) + D u)   (recomputed, not stored by the forward)
    dh[j]  = sum_b sum_t g[t] u[t - j] = IDFT( sum_b G_b conj(U_b) )[j]   (the batch sum taken on spectra)
    dD     = sum_b sum_t g[t] u[t] = dh[0]   (lag 0 of the same correlation)

Up to MAX_FUSED_LEN one program per channel does all of it on chip, looping over the batch; beyond, the multi-pass
kernels do the same steps through scratch memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dft import (
    dft_constants,
    dft_of_half,
    dot_precision,
    factors,
    filter_spectrum,
    fused_launch_configs,
    half_row_positions,
    inverse_dft_to_half,
    load_dft_tiles,
    spectrum_tile_offsets,
)
from .fftconv import fits_one_program
from .multipass import fftconv_rows_multipass, filter_gradient_multipass


@triton.autotune(configs=fused_launch_configs(), key=["N1", "N2", "HAS_PRE", "HAS_POST", "HAS_D", "DOT"])
@triton.jit
def _fftconv_backward_kernel(
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
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    HAS_D: tl.constexpr,
    DOT: tl.constexpr,
):
    channel = tl.program_id(0)
    pos = half_row_positions(N1, N2)
    valid = pos < L
    f1r_in, f1i_in, f1r_out, f1i_out, twr, twi, f2r, f2i = load_dft_tiles(
        f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr, twi_ptr, N1, N2
    )
    h_off = channel.to(tl.int64) * (N1 * N2) + spectrum_tile_offsets(N1, N2)
    hr = tl.load(hr_ptr + h_off)
    hi = tl.load(hi_ptr + h_off)
    if HAS_D:
        d = tl.load(d_ptr + channel).to(tl.float32)
    dhr = tl.zeros((N1, N2), dtype=tl.float32)
    dhi = tl.zeros((N1, N2), dtype=tl.float32)
    for b in range(B):
        base = (b * C + channel).to(tl.int64) * L
        v = tl.load(v_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
        u = v
        if HAS_PRE:
            pre = tl.load(pre_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
            u = v * pre
        g = tl.load(dy_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
        ur, ui = dft_of_half(u, f1r_in, f1i_in, twr, twi, f2r, f2i, DOT)
        if HAS_POST:
            inner = inverse_dft_to_half(
                ur * hr - ui * hi, ur * hi + ui * hr, f1r_out, f1i_out, twr, twi, f2r, f2i, inv_n, DOT
            )
            if HAS_D:
                inner = inner + d * u
            tl.store(dpost_ptr + base + pos, (g * inner).to(dpost_ptr.dtype.element_ty), mask=valid)
            g = g * tl.load(post_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
        gr, gi = dft_of_half(g, f1r_in, f1i_in, twr, twi, f2r, f2i, DOT)
        du = inverse_dft_to_half(gr * hr + gi * hi, gi * hr - gr * hi, f1r_out, f1i_out, twr, twi, f2r, f2i, inv_n, DOT)
        if HAS_D:
            du = du + d * g
        if HAS_PRE:
            tl.store(dpre_ptr + base + pos, (du * v).to(dpre_ptr.dtype.element_ty), mask=valid)
            du = du * pre
        tl.store(dv_ptr + base + pos, du.to(dv_ptr.dtype.element_ty), mask=valid)
        dhr += gr * ur + gi * ui
        dhi += gi * ur - gr * ui
    dh = inverse_dft_to_half(dhr, dhi, f1r_out, f1i_out, twr, twi, f2r, f2i, inv_n, DOT)
    tl.store(dh_ptr + channel.to(tl.int64) * L + pos, dh, mask=valid)


def _fused_backward(dy, v, spectrum, D, pre_gate, post_gate, dv, d_pre, d_post, dh_full) -> None:
    B, C, L = v.shape
    n1, n2 = factors(L)
    hr, hi = spectrum
    _fftconv_backward_kernel[(C,)](
        dy,
        v,
        v if pre_gate is None else pre_gate,
        v if post_gate is None else post_gate,
        v if D is None else D,
        hr,
        hi,
        dv,
        dv if d_pre is None else d_pre,
        dv if d_post is None else d_post,
        dh_full,
        *dft_constants(n1, n2, v.device),
        B,
        C,
        L,
        1.0 / (n1 * n2),
        N1=n1,
        N2=n2,
        HAS_PRE=pre_gate is not None,
        HAS_POST=post_gate is not None,
        HAS_D=D is not None,
        DOT=dot_precision(v.dtype),
    )


def _multipass_backward(dy, v, spectrum, D, pre_gate, post_gate, dv, d_pre, d_post) -> torch.Tensor:
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
    spectrum = filter_spectrum(h, L)
    dv = torch.empty_like(v)
    d_pre = None if pre_gate is None else torch.empty_like(pre_gate)
    d_post = None if post_gate is None else torch.empty_like(post_gate)
    if fits_one_program(L):
        dh_full = torch.empty(C, L, device=v.device, dtype=torch.float32)
        _fused_backward(dy, v, spectrum, D, pre_gate, post_gate, dv, d_pre, d_post, dh_full)
    else:
        dh_full = _multipass_backward(dy, v, spectrum, D, pre_gate, post_gate, dv, d_pre, d_post)
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
