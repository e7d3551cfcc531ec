"""The long convolution, Hyena's one expensive operation, behind ONE dispatch function.

``long_conv(v, h, D, pre_gate, post_gate)`` computes, per channel,

    u = pre_gate * v                      (pre_gate optional)
    y = post_gate * (causal_conv(u, h) + D * u)   (post_gate optional)

with ``v, gates: (B, C, L)``, ``h: (C, Lh)`` (``Lh`` may be shorter than ``L``), ``D: (C,)``. The arithmetic runs in
float32 at least (float64 stays float64), the result comes back in the dtype of ``v``. The modeling code calls only
this function; the implementation (pure PyTorch here, Triton kernels where available) is chosen in ``resolve_impl``.
"""

from __future__ import annotations

import os

import torch

ENV_OVERRIDE = "HYENA_LONG_CONV_IMPL"


def _fast_fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft / cuFFT are fastest at such sizes."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


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
        return torch.nn.functional.conv1d(torch.nn.functional.pad(u, (taps - 1, 0)), h.flip(-1).unsqueeze(1),
                                          groups=u.shape[1])
    n = _fast_fft_size(2 * seqlen)
    h_f = torch.fft.rfft(h, n=n)
    u_f = torch.fft.rfft(u, n=n)
    return torch.fft.irfft(u_f * h_f, n=n)[..., :seqlen]


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


def _needs_autograd(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# Without autograd the CPU path convolves a block of channels at a time, its FFT buffers about this many bytes: small
# buffers are reused by the allocator and stay in cache, while a fresh (B, C, 2L) buffer costs more in page faults than
# its FFT (2 threads, L = 32K: the whole-model forward 1.2x faster than with unblocked buffers).
FFT_BLOCK_BYTES = 16 << 20


def long_conv_torch(v, h, D=None, pre_gate=None, post_gate=None):
    """The pure-PyTorch path (CPU, or GPU without Triton): :func:`long_conv_reference` under autograd. Without it,
    the same arithmetic in fewer memory passes, a block of channels at a time: the gated input is written straight
    into the zero-padded FFT buffer (no separate pad / copy), the spectral product and skip are applied in place, and
    the post-gate writes the result."""
    bsz, channels, seqlen = v.shape
    if _needs_autograd(v, h, D, pre_gate, post_gate) or seqlen <= DIRECT_CONV_MAX_LEN:
        return long_conv_reference(v, h, D, pre_gate, post_gate)
    dtype = compute_dtype(v.dtype)
    n = _fast_fft_size(2 * seqlen)
    same_dtype = v.dtype == dtype and (pre_gate is None or pre_gate.dtype == dtype)
    y = torch.empty(v.shape, dtype=dtype, device=v.device)
    step = max(1, FFT_BLOCK_BYTES // (bsz * n * torch.finfo(dtype).bits // 8))
    for c0 in range(0, channels, step):
        block = slice(c0, c0 + step)
        pre, post = (None if g is None else g if g.shape[1] == 1 else g[:, block] for g in (pre_gate, post_gate))
        padded = torch.empty((bsz, min(step, channels - c0), n), dtype=dtype, device=v.device)
        padded[..., seqlen:].zero_()
        u = padded[..., :seqlen]
        if pre_gate is not None and same_dtype:
            torch.mul(v[:, block], pre, out=u)
        else:  # half-precision inputs: multiply in the compute dtype, like the reference
            u.copy_(v[:, block])
            if pre is not None:
                u.mul_(pre)
        spectrum = torch.fft.rfft(padded)
        spectrum.mul_(torch.fft.rfft(h[block, :seqlen].to(dtype), n=n))
        conv = torch.fft.irfft(spectrum, n=n)[..., :seqlen]
        if D is not None:
            conv.addcmul_(u, D[block].to(dtype).unsqueeze(-1))
        if post is not None:
            torch.mul(conv, post, out=y[:, block])
        else:
            y[:, block] = conv
    return y.to(v.dtype)


def _triton_available() -> bool:
    try:
        from hyena_hf.kernels import triton_long_conv  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_impl(requested: str, device: torch.device) -> str:
    """Pick "torch" or "triton". The environment variable HYENA_LONG_CONV_IMPL overrides the config."""
    impl = os.environ.get(ENV_OVERRIDE, requested) or "auto"
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"{ENV_OVERRIDE}/long_conv_impl must be 'auto', 'torch' or 'triton', got {impl!r}")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if impl == "auto":
        return "triton" if device.type == "cuda" and _triton_available() else "torch"
    if impl == "triton":
        if not _triton_available():
            raise RuntimeError("long_conv_impl='triton' was forced but the Triton kernels cannot be imported "
                               "(install the 'triton' extra)")
        if device.type != "cuda" and not interpreted:
            raise RuntimeError(f"long_conv_impl='triton' was forced on a {device.type} tensor; Triton needs a CUDA "
                               "device (or TRITON_INTERPRET=1 for the CPU interpreter)")
    return impl


def long_conv(v: torch.Tensor, h: torch.Tensor, D: torch.Tensor | None = None,
              pre_gate: torch.Tensor | None = None, post_gate: torch.Tensor | None = None,
              impl: str = "auto") -> torch.Tensor:
    """Gated causal long convolution; see the module docstring. ``impl``: "auto" | "torch" | "triton"."""
    if v.dim() != 3 or h.dim() != 2 or h.shape[0] != v.shape[1]:
        raise ValueError(f"long_conv expects v (B, C, L) and h (C, Lh); got v {tuple(v.shape)} and h {tuple(h.shape)}")
    if resolve_impl(impl, v.device) == "triton":
        from hyena_hf.kernels import triton_long_conv

        return triton_long_conv(v, h, D, pre_gate, post_gate)
    return long_conv_torch(v, h, D, pre_gate, post_gate)
