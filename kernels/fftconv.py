"""Fused gated FFT long convolution in Triton, with the FFT computed as matrix products (four-step / Monarch).

For one (batch, channel) row of length L, with N = N1 * N2 >= 2L (powers of two):

    x[n1, n2] = pre[n] * v[n],  n = N2 * n1 + n2          (rows n1 >= N1/2 are the zero padding: skipped)
    X = (F_N1[:, :N1/2] @ x[:N1/2]) * W_N^(k1 n2) @ F_N2   (spectrum, index k = k1 + N1 k2)
    Y = X * H  (or X * conj(H))                            (H: the filter spectrum, computed once per call)
    y[n1, n2] = Re( conj(F_N1)[:N1/2] @ (Y @ conj(F_N2)) * W_N^(-k1 n2) ) / N   (only the first half is kept)
    out = post * (y + D * x)

Real and imaginary planes are kept separately and every DFT is a ``tl.dot``; the whole row stays on chip, so the
activations cross memory once in and once out. ``CONJ`` turns the convolution into the correlation the backward pass
needs. Arithmetic is float32 whatever the input dtype (inputs are cast right after loading).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _fftconv_row_kernel(
    v_ptr, pre_ptr, post_ptr, d_ptr, out_ptr,
    hr_ptr, hi_ptr, h_row_stride,
    f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr, twi_ptr,
    L, C, inv_n,
    N1: tl.constexpr, N2: tl.constexpr, HAS_PRE: tl.constexpr, HAS_POST: tl.constexpr, HAS_D: tl.constexpr,
    CONJ: tl.constexpr,
):
    row = tl.program_id(0)
    channel = row % C
    H1: tl.constexpr = N1 // 2
    r_half = tl.arange(0, H1)
    r_full = tl.arange(0, N1)
    cols = tl.arange(0, N2)
    pos = r_half[:, None] * N2 + cols[None, :]  # (H1, N2) positions n = N2 n1 + n2 of the non-zero half
    valid = pos < L
    base = row.to(tl.int64) * L
    x = tl.load(v_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
    if HAS_PRE:
        x = x * tl.load(pre_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)

    # forward DFT, step 1: length-N1 DFTs down the columns, only over the non-zero half of the rows
    f1_half = r_full[:, None] * N1 + r_half[None, :]  # F1[k1, n1] for n1 < N1/2
    f1r = tl.load(f1r_ptr + f1_half)
    f1i = tl.load(f1i_ptr + f1_half)
    ar = tl.dot(f1r, x, input_precision="ieee")
    ai = tl.dot(f1i, x, input_precision="ieee")
    # twiddles W_N^(k1 n2)
    tw = r_full[:, None] * N2 + cols[None, :]
    twr = tl.load(twr_ptr + tw)
    twi = tl.load(twi_ptr + tw)
    br = ar * twr - ai * twi
    bi = ar * twi + ai * twr
    # step 2: length-N2 DFTs along the rows
    f2 = cols[:, None] * N2 + cols[None, :]
    f2r = tl.load(f2r_ptr + f2)
    f2i = tl.load(f2i_ptr + f2)
    zr = tl.dot(br, f2r, input_precision="ieee") - tl.dot(bi, f2i, input_precision="ieee")
    zi = tl.dot(br, f2i, input_precision="ieee") + tl.dot(bi, f2r, input_precision="ieee")

    # pointwise product with the filter spectrum (laid out [k1, k2] like Z)
    h_off = channel.to(tl.int64) * h_row_stride + tw
    hr = tl.load(hr_ptr + h_off)
    hi = tl.load(hi_ptr + h_off)
    if CONJ:
        hi = -hi
    yr = zr * hr - zi * hi
    yi = zr * hi + zi * hr

    # inverse DFT: conj(F2) along the rows, conj twiddles, conj(F1) down the columns (first half of the output only)
    pr = tl.dot(yr, f2r, input_precision="ieee") + tl.dot(yi, f2i, input_precision="ieee")
    pi = tl.dot(yi, f2r, input_precision="ieee") - tl.dot(yr, f2i, input_precision="ieee")
    qr = pr * twr + pi * twi
    qi = pi * twr - pr * twi
    f1_out = r_half[:, None] * N1 + r_full[None, :]  # F1[n1, k1] for n1 < N1/2 (F1 is symmetric)
    g1r = tl.load(f1r_ptr + f1_out)
    g1i = tl.load(f1i_ptr + f1_out)
    y = (tl.dot(g1r, qr, input_precision="ieee") + tl.dot(g1i, qi, input_precision="ieee")) * inv_n

    if HAS_D:
        y = y + tl.load(d_ptr + channel).to(tl.float32) * x
    if HAS_POST:
        y = y * tl.load(post_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
    tl.store(out_ptr + base + pos, y.to(out_ptr.dtype.element_ty), mask=valid)


_CONSTANTS: dict[tuple, tuple[torch.Tensor, ...]] = {}


def _factors(seqlen: int) -> tuple[int, int]:
    n = max(512, 1 << (2 * seqlen - 1).bit_length())  # >= 2L, and tiles of at least 16 x 16 (tl.dot on GPUs)
    log_n = n.bit_length() - 1
    n1 = 1 << ((log_n + 1) // 2)
    return n1, n // n1


def _dft_constants(n1: int, n2: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    key = (n1, n2, str(device))
    if key not in _CONSTANTS:
        n = n1 * n2

        def dft(m: int) -> torch.Tensor:
            idx = torch.arange(m, dtype=torch.float64)
            return torch.exp(-2j * math.pi * torch.outer(idx, idx) / m)

        twiddle = torch.exp(-2j * math.pi * torch.outer(torch.arange(n1, dtype=torch.float64),
                                                        torch.arange(n2, dtype=torch.float64)) / n)
        planes = []
        for mat in (dft(n1), dft(n2), twiddle):
            planes += [mat.real.float().contiguous().to(device), mat.imag.float().contiguous().to(device)]
        _CONSTANTS[key] = tuple(planes)
    return _CONSTANTS[key]


def filter_spectrum(h: torch.Tensor, seqlen: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectrum of ``h: (C, Lh)`` at the kernel's FFT size, laid out ``[k1, k2]`` (k = k1 + N1 k2), as real and
    imaginary planes ``(C, N1, N2)``; computed once and shared by every row of the batch."""
    n1, n2 = _factors(seqlen)
    spec = torch.fft.fft(h[..., :seqlen].float(), n=n1 * n2)
    spec = spec.view(h.shape[0], n2, n1).transpose(1, 2)
    return spec.real.contiguous(), spec.imag.contiguous()


# Lengths one program handles with the whole row on chip (N = 2L DFT tiles in registers); longer rows take the
# multi-pass kernels below.
MAX_FUSED_LEN = 2048


def fftconv_rows(v: torch.Tensor, spectrum: tuple[torch.Tensor, torch.Tensor], D: torch.Tensor | None = None,
                 pre_gate: torch.Tensor | None = None, post_gate: torch.Tensor | None = None,
                 conj: bool = False, per_row_spectrum: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """Launch the fused kernel on ``v: (B, C, L)``; ``spectrum`` from :func:`filter_spectrum` (per channel, or per
    row of ``B*C`` when ``per_row_spectrum``). ``out`` (optional) receives the result."""
    B, C, L = v.shape
    if L > MAX_FUSED_LEN:
        return fftconv_rows_multipass(v, spectrum, D, pre_gate, post_gate, conj, per_row_spectrum, out)
    n1, n2 = _factors(L)
    v = v.contiguous()
    out = torch.empty_like(v) if out is None else out
    hr, hi = spectrum
    consts = _dft_constants(n1, n2, v.device)
    dummy = v
    _fftconv_row_kernel[(B * C,)](
        v, pre_gate.contiguous() if pre_gate is not None else dummy,
        post_gate.contiguous() if post_gate is not None else dummy,
        D.contiguous() if D is not None else dummy, out,
        hr, hi, n1 * n2,
        *consts,
        L, B * C if per_row_spectrum else C, 1.0 / (n1 * n2),
        N1=n1, N2=n2, HAS_PRE=pre_gate is not None, HAS_POST=post_gate is not None, HAS_D=D is not None,
        CONJ=conj,
    )
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Multi-pass variant for rows that do not fit one program: the same four-step transform, each step a blocked
# (complex) matrix product over HBM scratch. Pass 1: column DFTs of the non-zero half + twiddles. Pass 2: row DFTs and
# the product with the filter spectrum. Pass 3: inverse row DFTs + conjugate twiddles. Pass 4: inverse column DFTs
# of the kept half + skip and gates. O(N (N1 + N2)) work, like the fused kernel, for any power-of-two N.
# ----------------------------------------------------------------------------------------------------------------------
@triton.jit
def _mp_column_dft(v_ptr, pre_ptr, sr_ptr, si_ptr, f1r_ptr, f1i_ptr, twr_ptr, twi_ptr, L,
                   N1: tl.constexpr, N2: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                   HAS_PRE: tl.constexpr):
    row, pm, pn = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    k1 = pm * BM + tl.arange(0, BM)
    n2 = pn * BN + tl.arange(0, BN)
    acc_r = tl.zeros((BM, BN), dtype=tl.float32)
    acc_i = tl.zeros((BM, BN), dtype=tl.float32)
    base = row.to(tl.int64) * L
    for kb in range(0, N1 // 2, BK):  # only the non-zero (first) half of the padded input
        n1 = kb + tl.arange(0, BK)
        pos = n1[:, None] * N2 + n2[None, :]
        valid = pos < L
        x = tl.load(v_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
        if HAS_PRE:
            x = x * tl.load(pre_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
        f = k1[:, None] * N1 + n1[None, :]
        acc_r += tl.dot(tl.load(f1r_ptr + f), x, input_precision="ieee")
        acc_i += tl.dot(tl.load(f1i_ptr + f), x, input_precision="ieee")
    tw = k1[:, None] * N2 + n2[None, :]
    twr = tl.load(twr_ptr + tw)
    twi = tl.load(twi_ptr + tw)
    out = row.to(tl.int64) * (N1 * N2) + tw
    tl.store(sr_ptr + out, acc_r * twr - acc_i * twi)
    tl.store(si_ptr + out, acc_r * twi + acc_i * twr)


@triton.jit
def _mp_row_dft(ar_ptr, ai_ptr, br_ptr, bi_ptr, f2r_ptr, f2i_ptr, hr_ptr, hi_ptr, twr_ptr, twi_ptr, h_row_stride, C,
                N1: tl.constexpr, N2: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                INVERSE: tl.constexpr, CONJ: tl.constexpr):
    """Forward: B = (A @ F2) * H. Inverse: B = (A @ conj(F2)) * conj(twiddle)."""
    row, pm, pn = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    k1 = pm * BM + tl.arange(0, BM)
    cols = pn * BN + tl.arange(0, BN)
    acc_r = tl.zeros((BM, BN), dtype=tl.float32)
    acc_i = tl.zeros((BM, BN), dtype=tl.float32)
    base = row.to(tl.int64) * (N1 * N2)
    for kb in range(0, N2, BK):
        inner = kb + tl.arange(0, BK)
        a_off = base + k1[:, None] * N2 + inner[None, :]
        a_r = tl.load(ar_ptr + a_off)
        a_i = tl.load(ai_ptr + a_off)
        f = inner[:, None] * N2 + cols[None, :]
        f_r = tl.load(f2r_ptr + f)
        f_i = tl.load(f2i_ptr + f)
        if INVERSE:
            f_i = -f_i
        acc_r += tl.dot(a_r, f_r, input_precision="ieee") - tl.dot(a_i, f_i, input_precision="ieee")
        acc_i += tl.dot(a_r, f_i, input_precision="ieee") + tl.dot(a_i, f_r, input_precision="ieee")
    idx = k1[:, None] * N2 + cols[None, :]
    if INVERSE:
        m_r = tl.load(twr_ptr + idx)
        m_i = -tl.load(twi_ptr + idx)
    else:
        h_off = (row % C).to(tl.int64) * h_row_stride + idx
        m_r = tl.load(hr_ptr + h_off)
        m_i = tl.load(hi_ptr + h_off)
        if CONJ:
            m_i = -m_i
    tl.store(br_ptr + base + idx, acc_r * m_r - acc_i * m_i)
    tl.store(bi_ptr + base + idx, acc_r * m_i + acc_i * m_r)


@triton.jit
def _mp_column_idft(qr_ptr, qi_ptr, v_ptr, pre_ptr, post_ptr, d_ptr, out_ptr, f1r_ptr, f1i_ptr, L, C, inv_n,
                    N1: tl.constexpr, N2: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                    HAS_PRE: tl.constexpr, HAS_POST: tl.constexpr, HAS_D: tl.constexpr):
    row, pm, pn = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n1 = pm * BM + tl.arange(0, BM)  # output rows: only the first half of the positions is kept
    n2 = pn * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    base = row.to(tl.int64) * (N1 * N2)
    for kb in range(0, N1, BK):
        k1 = kb + tl.arange(0, BK)
        f = n1[:, None] * N1 + k1[None, :]
        q_off = base + k1[:, None] * N2 + n2[None, :]
        acc += tl.dot(tl.load(f1r_ptr + f), tl.load(qr_ptr + q_off), input_precision="ieee")
        acc += tl.dot(tl.load(f1i_ptr + f), tl.load(qi_ptr + q_off), input_precision="ieee")
    y = acc * inv_n
    pos = n1[:, None] * N2 + n2[None, :]
    valid = pos < L
    vbase = row.to(tl.int64) * L
    if HAS_D:
        x = tl.load(v_ptr + vbase + pos, mask=valid, other=0.0).to(tl.float32)
        if HAS_PRE:
            x = x * tl.load(pre_ptr + vbase + pos, mask=valid, other=0.0).to(tl.float32)
        y = y + tl.load(d_ptr + row % C).to(tl.float32) * x
    if HAS_POST:
        y = y * tl.load(post_ptr + vbase + pos, mask=valid, other=0.0).to(tl.float32)
    tl.store(out_ptr + vbase + pos, y.to(out_ptr.dtype.element_ty), mask=valid)


def fftconv_rows_multipass(v, spectrum, D=None, pre_gate=None, post_gate=None, conj=False, per_row_spectrum=False,
                           out=None, block: int = 32):
    """Multi-pass counterpart of :func:`fftconv_rows` (same arguments), for any length."""
    B, C, L = v.shape
    n1, n2 = _factors(L)
    bm = bn = bk = min(block, n1 // 2, n2)
    rows = B * C
    v = v.contiguous()
    out = torch.empty_like(v) if out is None else out
    hr, hi = spectrum
    f1r, f1i, f2r, f2i, twr, twi = _dft_constants(n1, n2, v.device)
    scratch = [torch.empty(rows, n1, n2, device=v.device, dtype=torch.float32) for _ in range(4)]
    pre = pre_gate.contiguous() if pre_gate is not None else v
    post = post_gate.contiguous() if post_gate is not None else v
    chan = rows if per_row_spectrum else C
    _mp_column_dft[(rows, n1 // bm, n2 // bn)](v, pre, scratch[0], scratch[1], f1r, f1i, twr, twi, L,
                                                N1=n1, N2=n2, BM=bm, BN=bn, BK=bk, HAS_PRE=pre_gate is not None)
    _mp_row_dft[(rows, n1 // bm, n2 // bn)](scratch[0], scratch[1], scratch[2], scratch[3], f2r, f2i, hr, hi, twr, twi,
                                             n1 * n2, chan, N1=n1, N2=n2, BM=bm, BN=bn, BK=bk, INVERSE=False, CONJ=conj)
    _mp_row_dft[(rows, n1 // bm, n2 // bn)](scratch[2], scratch[3], scratch[0], scratch[1], f2r, f2i, hr, hi, twr, twi,
                                             n1 * n2, chan, N1=n1, N2=n2, BM=bm, BN=bn, BK=bk, INVERSE=True, CONJ=False)
    _mp_column_idft[(rows, (n1 // 2) // bm, n2 // bn)](scratch[0], scratch[1], v, pre, post,
                                                       D.contiguous() if D is not None else v, out, f1r, f1i, L,
                                                       chan if D is None else C, 1.0 / (n1 * n2),
                                                       N1=n1, N2=n2, BM=bm, BN=bn, BK=bk,
                                                       HAS_PRE=pre_gate is not None, HAS_POST=post_gate is not None,
                                                       HAS_D=D is not None)
    return out
