"""The long convolution, Hyena's one expensive operation, behind ONE dispatch function.

``long_conv(v, h, D, pre_gate, post_gate)`` computes, per channel,

    u = pre_gate * v                      (pre_gate optional)
    y = post_gate * (causal_conv(u, h) + D * u)   (post_gate optional)

with ``v, gates: (B, C, L)``, ``h: (C, Lh)`` (``Lh`` may be shorter than ``L``), ``D: (C,)``. The arithmetic runs in
float32 at least (float64 stays float64), the result comes back in the dtype of ``v``. The modeling code calls only
this function; the implementation (pure PyTorch here, Triton kernels where available) is chosen in ``resolve_impl``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import threading
from pathlib import Path

import torch

ENV_OVERRIDE = "HYENA_LONG_CONV_IMPL"


def smooth_size(n: int, min_twos: int = 0, max_threes: int | None = None) -> int:
    """Smallest 2^a 3^b 5^c >= n with a >= ``min_twos`` and b <= ``max_threes`` (None: any)."""
    best = 1 << max((n - 1).bit_length(), min_twos)
    odd5 = 1
    while odd5 < best:
        odd, threes = odd5, 0
        while odd < best and (max_threes is None or threes <= max_threes):
            size = odd << min_twos
            while size < n:
                size *= 2
            best = min(best, size)
            odd, threes = odd * 3, threes + 1
        odd5 *= 5
    return best


# FFT sizes: a real FFT of n points runs as a complex one of n/2, so sizes with few factors of 2 (odd ones above all)
# or many of 3 were 2-3.5x slower per point than their neighbours; above 2^18 points, where the transform leaves the
# cache, powers of two were fastest and sizes with a long power of two times an odd factor slowest (2 threads, MKL;
# benchmarks/bench_fft_sizes.py: averaged over lengths, the smallest 2^a 3^b 5^c took 1.14x the FFT time up to 70K
# tokens and 1.41x from 131K to 1.1M).
LARGE_FFT_POINTS = 1 << 18


def _fast_fft_size(n: int) -> int:
    """The FFT size for at least n points (see LARGE_FFT_POINTS): below it the smallest 2^a 3^b 5^c with a >= 4 and
    b <= 4; above, the next power of two where it is at most 1.5 n, else the smallest such size with a >= 2."""
    if n <= 64:
        return smooth_size(n)
    if n <= LARGE_FFT_POINTS:
        return smooth_size(n, min_twos=4, max_threes=4)
    power = 1 << (n - 1).bit_length()
    return power if 2 * power <= 3 * n else smooth_size(n, min_twos=2)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype long convolutions and recurrent states compute in: at least float32."""
    return torch.promote_types(dtype, torch.float32)


def conv_fft_size(seqlen: int, taps: int) -> int:
    """FFT size of a causal convolution of ``seqlen`` inputs with a ``taps``-long filter. A circular convolution of
    ``seqlen + taps - 1`` points or more has no wrap-around in the first ``seqlen`` outputs (nor in the correlations
    of the backward), so a filter of at most half the input (H3's shift SSM: d_state taps) takes that many points,
    about half the 2 seqlen of a full-length one. A longer filter takes 2 seqlen; either is rounded up to a fast size
    (:func:`_fast_fft_size`)."""
    if 2 * taps <= seqlen:
        return _fast_fft_size(seqlen + max(taps, 1) - 1)
    return _fast_fft_size(2 * seqlen)


# A direct depthwise convolution beats the FFT on CPU only for short inputs with many rows
# (benchmarks/bench_short_conv_cpu.py, 2 threads: B*C = 8*768 rows, direct 1.2-1.9x faster for L <= 32 and slower from
# L = 64; B*C = 256 rows, the FFT is faster at every L). On GPU the FFT / Triton path is used at every length.
DIRECT_CONV_MAX_LEN = 32
DIRECT_CONV_MIN_ROWS = 2048


def causal_conv_torch(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Causal convolution y[t] = sum_{j<=t} h[j] u[t-j] by real FFTs of size >= 2L (no circular wrap-around), or
    directly for short inputs with many rows on CPU.

    ``u: (B, C, L)`` and ``h: (C, Lh)``, both already in the compute dtype. The filter spectrum is computed once
    and broadcast over the batch.
    """
    seqlen = u.shape[-1]
    h = h[..., :seqlen]
    rows = u.shape[0] * u.shape[1] if u.dim() == 3 else 0
    if seqlen <= DIRECT_CONV_MAX_LEN and rows >= DIRECT_CONV_MIN_ROWS and u.device.type == "cpu":
        taps = h.shape[-1]
        return torch.nn.functional.conv1d(
            torch.nn.functional.pad(u, (taps - 1, 0)), h.flip(-1).unsqueeze(1), groups=u.shape[1]
        )
    n = conv_fft_size(seqlen, h.shape[-1])
    h_f = torch.fft.rfft(h, n=n)
    u_f = torch.fft.rfft(u, n=n)
    return torch.fft.irfft(u_f * h_f, n=n)[..., :seqlen]


# convolution_tail computes a tail of at most this many products (inputs x outputs) directly: the small blocks of
# relaxed decoding, where an FFT's fixed cost dominates.
TAIL_DIRECT_MAX_PRODUCTS = 1024


@functools.lru_cache(maxsize=64)
def _tail_lags(seqlen: int, count: int, device: torch.device) -> torch.Tensor:
    """``lags[t, s] = seqlen + t - s`` ``(count, seqlen)``: the filter taps of a direct convolution tail (kept: the
    same few block sizes recur every few decoding steps)."""
    return seqlen + torch.arange(count, device=device)[:, None] - torch.arange(seqlen, device=device)


def convolution_tail(u: torch.Tensor, h: torch.Tensor, count: int) -> torch.Tensor:
    """What the inputs ``u (B, C, T)`` contribute to the ``count`` outputs after them of the causal convolution with
    ``h (C, >= T + count)``: ``y[t] = sum_s u[s] h[T + t - s]`` for t < count -> ``(B, C, count)``. By FFT, a
    circular convolution of T + count points or more (its wrap-around lands before T), or directly when small."""
    seqlen = u.shape[-1]
    h = h[..., : seqlen + count].to(u.dtype)
    if seqlen * count <= TAIL_DIRECT_MAX_PRODUCTS:
        return torch.einsum("bcs,cts->bct", u, h[:, _tail_lags(seqlen, count, u.device)])
    n = _fast_fft_size(seqlen + count)
    out = u.new_empty(*u.shape[:-1], count)
    for block in _channel_blocks(u.shape[0], u.shape[1], n, u.dtype, u.device):  # see FFT_BLOCK_BYTES
        spectrum = torch.fft.rfft(u[:, block], n=n) * torch.fft.rfft(h[block], n=n)
        out[:, block] = torch.fft.irfft(spectrum, n=n)[..., seqlen : seqlen + count]
    return out


def long_conv_reference(v, h, D=None, pre_gate=None, post_gate=None):
    """Pure-PyTorch reference of :func:`long_conv`: out-of-place ops, differentiable by autograd."""
    out_dtype = v.dtype
    dtype = compute_dtype(v.dtype)
    u = v.to(dtype)
    if pre_gate is not None:
        u = u * pre_gate.to(dtype)
    y = causal_conv_torch(u, h.to(dtype))
    if D is not None:
        y = y + u * D.to(dtype).unsqueeze(-1)
    if post_gate is not None:
        y = y * post_gate.to(dtype)
    return y.to(out_dtype)


def exporting() -> bool:
    """Under torch.export the plain autograd ops are traced: custom autograd Functions and in-place fast paths would
    bake grad-mode assumptions into the exported program."""
    return torch.compiler.is_exporting()


def needs_autograd(*tensors: torch.Tensor | None) -> bool:
    """True when autograd would record an op on these tensors (the in-place / out= fast paths do not apply)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# The PyTorch path (forward and backward) convolves a block of channels at a time, its FFT buffers about this many
# bytes: small buffers are reused by the allocator and stay in cache, while a fresh (B, C, 2L) buffer costs more in page
# faults than its FFT (2 threads: the whole-model forward at 8K 1.2x faster than with unblocked buffers).
FFT_BLOCK_BYTES = 16 << 20
# On a GPU a small block is a launch-bound sliver of the device (B=8, C=768, L=4K in 16 MB blocks: 12 blocks of ~8
# launches each; that forward measured 2.4x slower than the one-pass reference on an H100, and equal to it in one
# block). A 256 MB block keeps each launch ~0.1 ms of HBM traffic (launch overhead a few percent) and caps the
# backward's fp32 temporaries, which in one 1 GB block peaked 1.45x above the reference's memory at 8K-16K (not yet
# re-measured on a GPU at 256 MB; L <= 4K at B=8, C=768 is one block either way).
FFT_BLOCK_BYTES_GPU = 256 << 20


def _channel_blocks(bsz: int, channels: int, n: int, dtype: torch.dtype, device: torch.device):
    budget = FFT_BLOCK_BYTES if device.type == "cpu" else FFT_BLOCK_BYTES_GPU
    step = max(1, budget // (bsz * n * torch.finfo(dtype).bits // 8))
    for c0 in range(0, channels, step):
        yield slice(c0, min(channels, c0 + step))


def _block_of(gate: torch.Tensor | None, block: slice) -> torch.Tensor | None:
    """The channels ``block`` of a gate; a gate broadcast over channels (channel dim 1) is used whole."""
    return None if gate is None else gate if gate.shape[1] == 1 else gate[:, block]


def zero_padded(
    workspace: dict | None, name: str, rows: tuple, n: int, width: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """An FFT buffer ``(*rows, n)`` whose columns from ``width`` on are zero; the caller writes the first ``width``.
    Kept in ``workspace[name]`` and reused while n, dtype and device match and it has the rows: its zero columns
    stay zero, so a reuse writes only the data (a fresh buffer per channel block is page-faulted in again at long
    lengths, and its padding filled again)."""
    count = math.prod(rows)
    buffer, zero_from = (None, n) if workspace is None else workspace.get(name, (None, n))
    fits = buffer is not None and buffer.shape[0] >= count and buffer.shape[1] == n
    if not (fits and buffer.dtype == dtype and buffer.device == device):
        buffer = torch.empty(count, n, dtype=dtype, device=device)
        zero_from = n
    if zero_from > width:
        buffer[:, width:zero_from].zero_()
    if workspace is not None:
        workspace[name] = (buffer, width)
    return buffer[:count].view(*rows, n)


def _padded_input(v, pre, seqlen: int, n: int, dtype: torch.dtype, workspace: dict | None = None) -> torch.Tensor:
    """(pre * v) written straight into a zero-padded FFT buffer (B, c, n), multiplied in the compute dtype."""
    padded = zero_padded(workspace, "fft_input", v.shape[:-1], n, seqlen, dtype, v.device)
    u = padded[..., :seqlen]
    if pre is not None and v.dtype == dtype and pre.dtype == dtype:
        torch.mul(v, pre, out=u)
    else:
        u.copy_(v)
        if pre is not None:
            u.mul_(pre)
    return padded


def filter_spectra_shape(
    channels: int, seqlen: int, dtype: torch.dtype, taps: int | None = None
) -> tuple[tuple[int, int], torch.dtype]:
    """Shape and dtype of the spectra :func:`long_conv_torch` reads or writes for ``channels`` filters of ``taps``
    taps (None: ``seqlen``; the zero-padded filters with the skip on tap 0, at the call's FFT size), inputs of
    ``seqlen`` positions and ``dtype``."""
    n = conv_fft_size(seqlen, seqlen if taps is None else min(taps, seqlen))
    return (channels, n // 2 + 1), compute_dtype(dtype).to_complex()


def _blocked_forward(
    v,
    h,
    D,
    pre_gate,
    post_gate,
    out: torch.Tensor | None = None,
    workspace: dict | None = None,
    spectra=None,
    taps=None,
):
    """The forward of :func:`long_conv` without autograd, a block of channels at a time: the gated input and the
    filter go straight into zero-padded FFT buffers reused from block to block (and from call to call through
    ``workspace``, see :func:`zero_padded`), the skip folded into the filter's tap 0, spectral product in place,
    post-gate writes the result (into ``out`` when given, a (B, C, L) tensor of the compute dtype). ``spectra``
    (see :func:`long_conv_torch`): the filter's spectrum, read in place of h and D (a filter of ``taps`` taps) when
    h is None, else written."""
    bsz, channels, seqlen = v.shape
    dtype = compute_dtype(v.dtype)
    if h is None:
        taps = min(taps, seqlen)
    else:
        if h.shape[-1] == 0:  # one zero tap: tap 0 is written on every call (it carries the skip)
            h = h.new_zeros(h.shape[0], 1)
        taps = min(h.shape[-1], seqlen)
    n = conv_fft_size(seqlen, taps)
    workspace = {} if workspace is None else workspace
    y = torch.empty(v.shape, dtype=dtype, device=v.device) if out is None else out
    for block in _channel_blocks(bsz, channels, n, dtype, v.device):
        pre, post = _block_of(pre_gate, block), _block_of(post_gate, block)
        padded = _padded_input(v[:, block], pre, seqlen, n, dtype, workspace)
        spectrum = torch.fft.rfft(padded)
        if h is None:
            spectrum.mul_(spectra[block])
        else:
            padded_h = zero_padded(workspace, "fft_filter", (padded.shape[1],), n, taps, dtype, v.device)
            padded_h[:, :taps].copy_(h[block, :taps])
            if D is not None:  # the skip D u is the convolution with D at tap 0: no pass of its own over the output
                padded_h[:, 0].add_(D[block].to(dtype))
            spectrum.mul_(torch.fft.rfft(padded_h, out=None if spectra is None else spectra[block]))
        conv = torch.fft.irfft(spectrum, n=n)[..., :seqlen]
        if post is not None:
            torch.mul(conv, post, out=y[:, block])
        else:
            y[:, block] = conv
    return y if out is not None else y.to(v.dtype)


def _blocked_backward(dy, v, h, D, pre_gate, post_gate, needs: tuple[bool, ...]):
    """Gradients of :func:`long_conv` for (v, h, D, pre_gate, post_gate) (None where not needed), a block of channels
    at a time, by the same real FFTs: du is the correlation of g = dy * post with h (plus D g), dh the correlation of
    g with u = pre * v summed over the batch; the ungated convolution for d_post is recomputed, not stored."""
    bsz, channels, seqlen = v.shape
    dtype = compute_dtype(v.dtype)
    taps = min(h.shape[-1], seqlen)
    n = conv_fft_size(seqlen, taps)
    full = lambda: torch.empty(v.shape, dtype=dtype, device=v.device)  # noqa: E731
    dv = full() if needs[0] else None
    dh = torch.zeros(h.shape, dtype=dtype, device=h.device) if needs[1] else None
    dD = torch.empty(channels, dtype=dtype, device=v.device) if needs[2] and D is not None else None
    d_pre = full() if needs[3] and pre_gate is not None else None
    d_post = full() if needs[4] and post_gate is not None else None
    for block in _channel_blocks(bsz, channels, n, dtype, v.device):
        pre, post = _block_of(pre_gate, block), _block_of(post_gate, block)
        skip = None if D is None else D[block].to(dtype).unsqueeze(-1)
        padded_u = _padded_input(v[:, block], pre, seqlen, n, dtype)
        u = padded_u[..., :seqlen]
        u_f = torch.fft.rfft(padded_u)
        h_f = torch.fft.rfft(h[block, :seqlen].to(dtype), n=n)
        g = dy[:, block].to(dtype)
        if post is not None:
            if d_post is not None:
                inner = torch.fft.irfft(u_f * h_f, n=n)[..., :seqlen]
                if skip is not None:
                    inner.addcmul_(u, skip)
                torch.mul(inner, g, out=d_post[:, block])
            g = g * post
        g_f = torch.fft.rfft(g, n=n)
        if dv is not None or d_pre is not None:
            du = torch.fft.irfft(g_f * h_f.conj(), n=n)[..., :seqlen]
            if skip is not None:
                du.addcmul_(g, skip)
            if dv is not None and pre is not None:
                torch.mul(du, pre, out=dv[:, block])
            elif dv is not None:
                dv[:, block] = du
            if d_pre is not None:
                torch.mul(du, v[:, block], out=d_pre[:, block])
        if dh is not None:
            dh[block, :taps] = torch.fft.irfft((g_f * u_f.conj()).sum(0), n=n)[..., :taps]
        if dD is not None:
            dD[block] = (g * u).sum(dim=(0, 2))
    # gates broadcast over channels get full-shape gradients here; autograd sums them down to the gate's shape
    return tuple(
        None if grad is None else grad.to(like.dtype)
        for grad, like in zip((dv, dh, dD, d_pre, d_post), (v, h, D, pre_gate, post_gate))
    )


# On a GPU up to this length, autograd through the reference (which keeps the forward's spectra) beat the explicit
# backward (which recomputes them) on time and peak memory alike: an H100, B=8, C=768, bf16 and fp32, forward+backward
# 1.12-1.57x faster at 1K-4K with 26-32 % less peak memory; from 8K the explicit backward saves memory.
GPU_STORED_SPECTRA_MAX_LEN = 4096


def stores_spectra_for_backward(device: torch.device, seqlen: int) -> bool:
    """Whether the PyTorch path trains by autograd through :func:`long_conv_reference` (GPU, short rows) rather than
    with the explicit, recomputing backward of :class:`_LongConvTorch`."""
    return device.type != "cpu" and seqlen <= GPU_STORED_SPECTRA_MAX_LEN


class _LongConvTorch(torch.autograd.Function):
    """:func:`long_conv_torch` under autograd: the blocked forward and an explicit backward that saves only the inputs,
    where autograd through :func:`long_conv_reference` keeps every padded buffer and spectrum of the forward."""

    @staticmethod
    def forward(ctx, v, h, D, pre_gate, post_gate):
        ctx.save_for_backward(v, h, D, pre_gate, post_gate)
        return _blocked_forward(v, h, D, pre_gate, post_gate)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        return _blocked_backward(dy, *ctx.saved_tensors, needs=ctx.needs_input_grad)


_reuse = threading.local()  # the workspaces of fft_buffers_reused, per thread


@contextlib.contextmanager
def fft_buffers_reused(workspaces: dict):
    """Within this block, inference calls of :func:`long_conv_torch` given no workspace keep their FFT buffers in
    ``workspaces`` (a workspace per FFT size) for the next call of that size. The whole-backbone CPU engine runs H3's
    mixers, called as modules, in it: their two convolutions per layer then reuse buffers from layer to layer instead
    of page-faulting fresh ones (an H3 forward at 8K tokens 11-17 % faster on a 2-core Xeon)."""
    previous = getattr(_reuse, "workspaces", None)
    _reuse.workspaces = workspaces
    try:
        yield
    finally:
        _reuse.workspaces = previous


def long_conv_torch(
    v,
    h,
    D=None,
    pre_gate=None,
    post_gate=None,
    out: torch.Tensor | None = None,
    workspace: dict | None = None,
    spectra: torch.Tensor | None = None,
    taps: int | None = None,
):
    """The pure-PyTorch path (CPU, or GPU without Triton). Long inputs run a block of channels at a time, in fewer
    memory passes than :func:`long_conv_reference` (see :func:`_blocked_forward`), with an explicit backward under
    autograd; short inputs (where the direct convolution may win) take the reference. ``out`` (without autograd
    only): a tensor of v's shape and dtype to write the result into; ``workspace``: a dict keeping the FFT buffers
    for the next call (a caller's loop over channel blocks).

    ``spectra`` (without autograd, inputs longer than ``DIRECT_CONV_MAX_LEN``): the spectrum of the zero-padded
    filter with D on tap 0, shape and dtype by :func:`filter_spectra_shape`. With ``h`` None it is read in place of
    ``h`` and ``D`` (a caller keeping spectra between calls; ``taps``: the filter's length, None: the input's), else
    written."""
    if out is not None and (
        out.shape != v.shape or out.dtype != v.dtype or needs_autograd(v, h, D, pre_gate, post_gate)
    ):
        raise ValueError("long_conv_torch: out= needs a tensor of v's shape and dtype, and no autograd")
    if spectra is not None:
        return _long_conv_with_spectra(v, h, D, pre_gate, post_gate, out, workspace, spectra, taps)
    if v.shape[-1] <= DIRECT_CONV_MAX_LEN:
        y = long_conv_reference(v, h, D, pre_gate, post_gate)
        return y if out is None else out.copy_(y)
    if exporting():  # plain autograd ops: the exported program runs with or without grad
        return long_conv_reference(v, h, D, pre_gate, post_gate)
    if needs_autograd(v, h, D, pre_gate, post_gate):
        if stores_spectra_for_backward(v.device, v.shape[-1]):
            return long_conv_reference(v, h, D, pre_gate, post_gate)
        return _LongConvTorch.apply(v, h, D, pre_gate, post_gate)
    if out is not None and out.dtype != compute_dtype(v.dtype):  # half-precision output: computed, then rounded
        return out.copy_(_blocked_forward(v, h, D, pre_gate, post_gate))
    if workspace is None and not torch.compiler.is_compiling():
        workspace = _reused_workspace(v.shape[-1], h.shape[-1])
    return _blocked_forward(v, h, D, pre_gate, post_gate, out, workspace)


def _long_conv_with_spectra(v, h, D, pre_gate, post_gate, out, workspace, spectra: torch.Tensor, taps: int | None):
    """:func:`long_conv_torch` reading (``h`` None) or writing the filter's ``spectra``; checks the call suits them."""
    taps = (v.shape[-1] if taps is None else taps) if h is None else h.shape[-1]
    shape, dtype = filter_spectra_shape(v.shape[1], v.shape[-1], v.dtype, taps)
    if needs_autograd(v, h, D, pre_gate, post_gate) or exporting() or v.shape[-1] <= DIRECT_CONV_MAX_LEN:
        raise ValueError("long_conv_torch: spectra= serves inference of inputs longer than DIRECT_CONV_MAX_LEN")
    if spectra.shape != shape or spectra.dtype != dtype:
        raise ValueError(f"long_conv_torch: spectra= needs {shape} {dtype} for this input and filter length")
    if out is not None and out.dtype != compute_dtype(v.dtype):
        return out.copy_(_blocked_forward(v, h, D, pre_gate, post_gate, spectra=spectra, taps=taps))
    return _blocked_forward(v, h, D, pre_gate, post_gate, out, workspace, spectra, taps)


def _reused_workspace(seqlen: int, taps: int) -> dict | None:
    """The workspace of :func:`fft_buffers_reused` for a convolution's FFT size (the size :func:`_blocked_forward`
    picks), or None outside that context."""
    shared = getattr(_reuse, "workspaces", None)
    return None if shared is None else shared.setdefault(conv_fft_size(seqlen, min(taps, seqlen)), {})


def _triton_long_conv():
    """The Triton kernels' entry point, or None where they cannot be imported: no triton, or this module loaded as a
    saved model's remote code without the hyena_hf package (the PyTorch path runs then)."""
    try:
        from hyena_hf.kernels import triton_long_conv
    except ImportError:
        return None
    return triton_long_conv


def _triton_available() -> bool:
    return _triton_long_conv() is not None


CROSSOVER_FILE = Path(__file__).with_name("long_conv_crossover.json")


@functools.lru_cache(maxsize=1)
def _crossover_table() -> dict:
    try:
        return json.loads(CROSSOVER_FILE.read_text()).get("gpus", {})
    except (OSError, ValueError):  # a remote-code copy of this module without the table
        return {}


def triton_max_length(device: torch.device, dtype: torch.dtype, training: bool = True) -> int:
    """Longest length "auto" sends to Triton on this GPU, as measured per call pattern (``long_conv_crossover.json``,
    keyed by GPU name, then "training" (forward+backward) or "inference" (forward without autograd), then dtype;
    float16 runs the same kernels as bfloat16 and takes its entry where it has none of its own). A GPU, pattern or
    dtype never measured gets 0, the PyTorch path: on the one GPU measured (an H100) cuFFT beat the kernels from 2K
    tokens on, so nothing says they win on a GPU nobody has timed."""
    measured_gpu = _crossover_table().get(torch.cuda.get_device_name(device), {})
    entry = measured_gpu.get("training" if training else "inference", {})
    name = str(dtype).replace("torch.", "")
    measured = entry.get(name, entry.get("bfloat16") if name == "float16" else None)
    return 0 if measured is None else int(measured)


def resolve_impl(
    requested: str,
    device: torch.device,
    seqlen: int | None = None,
    dtype: torch.dtype = torch.float32,
    training: bool = True,
) -> str:
    """Pick "torch" or "triton" for a convolution of ``seqlen`` tokens (None: any), recorded by autograd
    (``training``) or not. "auto" runs Triton on CUDA up to :func:`triton_max_length`. The environment variable
    HYENA_LONG_CONV_IMPL overrides the config."""
    impl = os.environ.get(ENV_OVERRIDE, requested) or "auto"
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"{ENV_OVERRIDE}/long_conv_impl must be 'auto', 'torch' or 'triton', got {impl!r}")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if impl == "auto":
        # the kernels compute in float32: float64 stays on the float64 PyTorch path
        if device.type != "cuda" or dtype == torch.float64 or not _triton_available():
            return "torch"
        return "triton" if seqlen is None or seqlen <= triton_max_length(device, dtype, training) else "torch"
    if impl == "triton":
        if not _triton_available():
            raise RuntimeError(
                "long_conv_impl='triton' was forced but the Triton kernels cannot be imported "
                "(install the 'triton' extra)"
            )
        if device.type != "cuda" and not interpreted:
            raise RuntimeError(
                f"long_conv_impl='triton' was forced on a {device.type} tensor; Triton needs a CUDA "
                "device (or TRITON_INTERPRET=1 for the CPU interpreter)"
            )
        if dtype == torch.float64:
            raise ValueError(
                "long_conv_impl='triton' was forced on float64 tensors; the Triton kernels compute in float32 "
                "(use 'auto' or 'torch' for float64)"
            )
    return impl


def long_conv(
    v: torch.Tensor,
    h: torch.Tensor,
    D: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
    post_gate: torch.Tensor | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Gated causal long convolution ``post * (conv(pre * v, h) + D * pre * v)`` of ``v (B, C, L)`` with ``h (C, Lh)``
    (``D (C,)``; gates ``(B, C, L)`` or broadcastable; each optional), returned as ``(B, C, L)`` in ``v``'s dtype and
    computed in at least float32; see the module docstring. ``impl``: "auto" | "torch" | "triton"."""
    if v.dim() != 3 or h.dim() != 2 or h.shape[0] != v.shape[1]:
        raise ValueError(f"long_conv expects v (B, C, L) and h (C, Lh); got v {tuple(v.shape)} and h {tuple(h.shape)}")
    training = needs_autograd(v, h, D, pre_gate, post_gate)
    if resolve_impl(impl, v.device, v.shape[-1], v.dtype, training) == "triton":
        return _triton_long_conv()(v, h, D, pre_gate, post_gate)
    return long_conv_torch(v, h, D, pre_gate, post_gate)
