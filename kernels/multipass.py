"""Multi-pass FFT convolution for rows too long for one program: the four-step transform of :mod:`.dft`, each step a
blocked (complex) matrix product over scratch memory.

Pass 1 (`_column_dft`): length-N1 DFTs down the columns of the non-zero half, times the twiddles.
Pass 2 (`_row_dft`): length-N2 DFTs along the rows, then one of: times the filter spectrum (convolution), nothing
(a plain spectrum), accumulate ``M * conj(spectrum)`` into a buffer (the cross spectrum of the filter gradient), or,
for the inverse, conj(F2) and the conjugate twiddles.
Pass 4 (`_column_idft`): inverse column DFTs of the kept half, skip term, gates, and an optional second output.
O(N (N1 + N2)) work for any power-of-two N. Rows are processed in chunks so the scratch stays under SCRATCH_BYTES.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dft import complex_dot, dft_constants, dot_precision, factors

# Scratch memory one call may hold (the chunk is at least one row).
SCRATCH_BYTES = 256 << 20
# Tile edge of the blocked DFT products, launched with 4 warps: the largest that spills no registers on sm_80 and
# sm_90 in float32 (32 x 32 tiles of the complex row DFT spill 300-430 bytes per thread: triton_resources.py).
TILE = 16

MODE_FILTER, MODE_INVERSE, MODE_CROSS, MODE_PLAIN = 0, 1, 2, 3


@triton.jit
def _column_dft(
    x_ptr,
    gate_ptr,
    sr_ptr,
    si_ptr,
    f1r_ptr,
    f1i_ptr,
    twr_ptr,
    twi_ptr,
    L,
    row0,
    N1: tl.constexpr,
    N2: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    DOT: tl.constexpr,
    HAS_GATE: tl.constexpr,
):
    local, pm, pn = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    k1 = pm * BM + tl.arange(0, BM)
    n2 = pn * BN + tl.arange(0, BN)
    acc_r = tl.zeros((BM, BN), dtype=tl.float32)
    acc_i = tl.zeros((BM, BN), dtype=tl.float32)
    base = (local + row0).to(tl.int64) * L
    for kb in range(0, N1 // 2, BK):  # only the non-zero (first) half of the padded input
        n1 = kb + tl.arange(0, BK)
        pos = n1[:, None] * N2 + n2[None, :]
        valid = pos < L
        x = tl.load(x_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
        if HAS_GATE:
            x = x * tl.load(gate_ptr + base + pos, mask=valid, other=0.0).to(tl.float32)
        f = k1[:, None] * N1 + n1[None, :]
        acc_r += tl.dot(tl.load(f1r_ptr + f), x, input_precision=DOT)
        acc_i += tl.dot(tl.load(f1i_ptr + f), x, input_precision=DOT)
    tw = k1[:, None] * N2 + n2[None, :]
    twr = tl.load(twr_ptr + tw)
    twi = tl.load(twi_ptr + tw)
    out = local.to(tl.int64) * (N1 * N2) + tw
    tl.store(sr_ptr + out, acc_r * twr - acc_i * twi)
    tl.store(si_ptr + out, acc_r * twi + acc_i * twr)


@triton.jit
def _row_dft(
    ar_ptr,
    ai_ptr,
    br_ptr,
    bi_ptr,
    f2r_ptr,
    f2i_ptr,
    mr_ptr,
    mi_ptr,
    twr_ptr,
    twi_ptr,
    C,
    row0,
    N1: tl.constexpr,
    N2: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    DOT: tl.constexpr,
    MODE: tl.constexpr,
    CONJ: tl.constexpr,
):
    """S = A @ F2 (A @ conj(F2) for the inverse), then by MODE: B = S * H[channel] (conj(H) if CONJ); B = S * conj(tw);
    B += M * conj(S) (M: another spectrum of the same rows); B = S."""
    local, pm, pn = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    k1 = pm * BM + tl.arange(0, BM)
    cols = pn * BN + tl.arange(0, BN)
    acc_r = tl.zeros((BM, BN), dtype=tl.float32)
    acc_i = tl.zeros((BM, BN), dtype=tl.float32)
    base = local.to(tl.int64) * (N1 * N2)
    for kb in range(0, N2, BK):
        inner = kb + tl.arange(0, BK)
        a_off = base + k1[:, None] * N2 + inner[None, :]
        a_r = tl.load(ar_ptr + a_off)
        a_i = tl.load(ai_ptr + a_off)
        f = inner[:, None] * N2 + cols[None, :]
        f_r = tl.load(f2r_ptr + f)
        f_i = tl.load(f2i_ptr + f)
        if MODE == 1:
            f_i = -f_i
        z_r, z_i = complex_dot(a_r, a_i, f_r, f_i, DOT)
        acc_r += z_r
        acc_i += z_i
    idx = k1[:, None] * N2 + cols[None, :]
    out = base + idx
    if MODE == 3:
        tl.store(br_ptr + out, acc_r)
        tl.store(bi_ptr + out, acc_i)
    elif MODE == 2:
        m_r = tl.load(mr_ptr + out)
        m_i = tl.load(mi_ptr + out)
        tl.store(br_ptr + out, tl.load(br_ptr + out) + m_r * acc_r + m_i * acc_i)
        tl.store(bi_ptr + out, tl.load(bi_ptr + out) + m_i * acc_r - m_r * acc_i)
    else:
        if MODE == 1:
            m_r = tl.load(twr_ptr + idx)
            m_i = -tl.load(twi_ptr + idx)
        else:
            h_off = ((local + row0) % C).to(tl.int64) * (N1 * N2) + idx
            m_r = tl.load(mr_ptr + h_off)
            m_i = tl.load(mi_ptr + h_off)
            if CONJ:
                m_i = -m_i
        tl.store(br_ptr + out, acc_r * m_r - acc_i * m_i)
        tl.store(bi_ptr + out, acc_r * m_i + acc_i * m_r)


@triton.jit
def _column_idft(
    qr_ptr,
    qi_ptr,
    v_ptr,
    pre_ptr,
    post_ptr,
    aux_ptr,
    d_ptr,
    out_ptr,
    aux_out_ptr,
    f1r_ptr,
    f1i_ptr,
    L,
    C,
    row0,
    inv_n,
    N1: tl.constexpr,
    N2: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    DOT: tl.constexpr,
    HAS_PRE: tl.constexpr,
    HAS_POST: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_AUX: tl.constexpr,
):
    """y = inverse + D * (pre * v);  out = post * y;  aux_out = aux * y."""
    local, pm, pn = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    row = local + row0
    n1 = pm * BM + tl.arange(0, BM)  # output rows: only the first half of the positions is kept
    n2 = pn * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    base = local.to(tl.int64) * (N1 * N2)
    for kb in range(0, N1, BK):
        k1 = kb + tl.arange(0, BK)
        f = n1[:, None] * N1 + k1[None, :]
        q_off = base + k1[:, None] * N2 + n2[None, :]
        acc += tl.dot(tl.load(f1r_ptr + f), tl.load(qr_ptr + q_off), input_precision=DOT)
        acc += tl.dot(tl.load(f1i_ptr + f), tl.load(qi_ptr + q_off), input_precision=DOT)
    y = acc * inv_n
    pos = n1[:, None] * N2 + n2[None, :]
    valid = pos < L
    vbase = row.to(tl.int64) * L
    if HAS_D:
        x = tl.load(v_ptr + vbase + pos, mask=valid, other=0.0).to(tl.float32)
        if HAS_PRE:
            x = x * tl.load(pre_ptr + vbase + pos, mask=valid, other=0.0).to(tl.float32)
        y = y + tl.load(d_ptr + row % C).to(tl.float32) * x
    if HAS_AUX:
        aux = tl.load(aux_ptr + vbase + pos, mask=valid, other=0.0).to(tl.float32)
        tl.store(aux_out_ptr + vbase + pos, (y * aux).to(aux_out_ptr.dtype.element_ty), mask=valid)
    if HAS_POST:
        y = y * tl.load(post_ptr + vbase + pos, mask=valid, other=0.0).to(tl.float32)
    tl.store(out_ptr + vbase + pos, y.to(out_ptr.dtype.element_ty), mask=valid)


def _rows_per_chunk(n: int, planes: int, cap: int) -> int:
    return max(1, min(cap, SCRATCH_BYTES // (planes * n * 4)))


def _tile(n1: int, n2: int, block: int) -> int:
    return min(block, n1 // 2, n2)


def fftconv_rows_multipass(
    v: torch.Tensor,
    spectrum: tuple[torch.Tensor, torch.Tensor],
    D: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
    post_gate: torch.Tensor | None = None,
    conj: bool = False,
    out: torch.Tensor | None = None,
    aux: torch.Tensor | None = None,
    aux_out: torch.Tensor | None = None,
    block: int = TILE,
) -> torch.Tensor:
    """Multi-pass counterpart of :func:`.fftconv.fftconv_rows` (same arguments), for any length. With ``aux``,
    ``aux_out`` also receives ``aux * y``, the result before the post gate."""
    B, C, L = v.shape
    n1, n2 = factors(L)
    t = _tile(n1, n2, block)
    rows = B * C
    v = v.contiguous()
    out = torch.empty_like(v) if out is None else out
    if (aux is None) != (aux_out is None):
        raise ValueError("aux and aux_out go together")
    hr, hi = spectrum
    dot = dot_precision(v.dtype)
    f1r, f1i, f2r, f2i, twr, twi = dft_constants(n1, n2, v.device)
    chunk = _rows_per_chunk(n1 * n2, 4, rows)
    s = [torch.empty(chunk, n1, n2, device=v.device, dtype=torch.float32) for _ in range(4)]
    pre = v if pre_gate is None else pre_gate.contiguous()
    post = v if post_gate is None else post_gate.contiguous()
    aux = v if aux is None else aux.contiguous()
    dummy_out = out if aux_out is None else aux_out
    kw = dict(N1=n1, N2=n2, BM=t, BN=t, BK=t, DOT=dot)
    for row0 in range(0, rows, chunk):
        r = min(chunk, rows - row0)
        grid = (r, n1 // t, n2 // t)
        _column_dft[grid](v, pre, s[0], s[1], f1r, f1i, twr, twi, L, row0, HAS_GATE=pre_gate is not None, **kw)
        _row_dft[grid](s[0], s[1], s[2], s[3], f2r, f2i, hr, hi, twr, twi, C, row0, MODE=MODE_FILTER, CONJ=conj, **kw)
        _row_dft[grid](s[2], s[3], s[0], s[1], f2r, f2i, hr, hi, twr, twi, C, row0, MODE=MODE_INVERSE, CONJ=False, **kw)
        _column_idft[(r, (n1 // 2) // t, n2 // t)](
            s[0],
            s[1],
            v,
            pre,
            post,
            aux,
            v if D is None else D.contiguous(),
            out,
            dummy_out,
            f1r,
            f1i,
            L,
            C,
            row0,
            1.0 / (n1 * n2),
            HAS_PRE=pre_gate is not None,
            HAS_POST=post_gate is not None,
            HAS_D=D is not None,
            HAS_AUX=aux_out is not None,
            **kw,
        )
    return out


def filter_gradient_multipass(
    g_src: torch.Tensor,
    g_gate: torch.Tensor | None,
    u_src: torch.Tensor,
    u_gate: torch.Tensor | None,
    block: int = TILE,
) -> torch.Tensor:
    """``dh[c, j] = sum_b sum_t g[b, c, t] u[b, c, t - j]`` for j < L, with ``g = g_src * g_gate`` and
    ``u = u_src * u_gate`` (gates optional), all ``(B, C, L)``; float32 ``(C, L)``.

    The batch sum is taken in the frequency domain (sum_b G_b conj(U_b)), so only C inverse transforms are needed;
    channels are processed in blocks so the scratch stays bounded."""
    B, C, L = g_src.shape
    n1, n2 = factors(L)
    t = _tile(n1, n2, block)
    f1r, f1i, f2r, f2i, twr, twi = dft_constants(n1, n2, g_src.device)
    g_src, u_src = g_src.contiguous(), u_src.contiguous()
    g_gated, u_gated = g_gate is not None, u_gate is not None
    g_gate = g_gate.contiguous() if g_gated else g_src
    u_gate = u_gate.contiguous() if u_gated else u_src
    dh = torch.empty(C, L, device=g_src.device, dtype=torch.float32)
    cb = _rows_per_chunk(n1 * n2, 6, C)
    s = [torch.empty(cb, n1, n2, device=g_src.device, dtype=torch.float32) for _ in range(6)]
    kw = dict(N1=n1, N2=n2, BM=t, BN=t, BK=t, DOT=dot_precision(g_src.dtype))
    for c0 in range(0, C, cb):
        r = min(cb, C - c0)
        grid = (r, n1 // t, n2 // t)
        s[4].zero_()
        s[5].zero_()
        for b in range(B):
            row0 = b * C + c0
            _column_dft[grid](g_src, g_gate, s[0], s[1], f1r, f1i, twr, twi, L, row0, HAS_GATE=g_gated, **kw)
            _row_dft[grid](
                s[0], s[1], s[2], s[3], f2r, f2i, s[0], s[1], twr, twi, C, row0, MODE=MODE_PLAIN, CONJ=False, **kw
            )
            _column_dft[grid](u_src, u_gate, s[0], s[1], f1r, f1i, twr, twi, L, row0, HAS_GATE=u_gated, **kw)
            _row_dft[grid](
                s[0], s[1], s[4], s[5], f2r, f2i, s[2], s[3], twr, twi, C, row0, MODE=MODE_CROSS, CONJ=False, **kw
            )
        _row_dft[grid](
            s[4], s[5], s[0], s[1], f2r, f2i, s[4], s[5], twr, twi, C, c0, MODE=MODE_INVERSE, CONJ=False, **kw
        )
        _column_idft[(r, (n1 // 2) // t, n2 // t)](
            s[0],
            s[1],
            dh,
            dh,
            dh,
            dh,
            dh,
            dh,
            dh,
            f1r,
            f1i,
            L,
            C,
            c0,
            1.0 / (n1 * n2),
            HAS_PRE=False,
            HAS_POST=False,
            HAS_D=False,
            HAS_AUX=False,
            **kw,
        )
    return dh
