"""Triton kernels for the long convolution (installed as ``hyena_hf.kernels``).

``triton_long_conv(v, h, D, pre_gate, post_gate)`` is a ``torch.library`` custom op (``hyena_hf::long_conv``) with
an autograd formula, so ``torch.compile`` keeps it in the graph. Importing this package needs ``triton``; the
dispatch in ``hyena_hf.ops`` falls back to the PyTorch path when the import fails.
"""

from __future__ import annotations

import torch

from .fftconv import (  # noqa: F401  (ImportError here means: no triton)
    MAX_FUSED_LEN,
    fftconv_rows,
    fftconv_rows_multipass,
    filter_spectrum,
)


def _forward(v, h, D, pre, post):
    return fftconv_rows(v, filter_spectrum(h, v.shape[-1]), D, pre, post)


@torch.library.custom_op("hyena_hf::long_conv", mutates_args=())
def _long_conv_op(v: torch.Tensor, h: torch.Tensor, D: torch.Tensor | None, pre_gate: torch.Tensor | None,
                  post_gate: torch.Tensor | None) -> torch.Tensor:
    return _forward(v, h, D, pre_gate, post_gate)


@_long_conv_op.register_fake
def _(v, h, D, pre_gate, post_gate):
    return torch.empty_like(v)


@torch.library.custom_op("hyena_hf::long_conv_backward", mutates_args=())
def _long_conv_backward_op(dy: torch.Tensor, v: torch.Tensor, h: torch.Tensor, D: torch.Tensor | None,
                           pre_gate: torch.Tensor | None, post_gate: torch.Tensor | None
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for (v, h, D, pre, post); zeros stand for inputs that were None."""
    B, C, L = v.shape
    spectrum = filter_spectrum(h, L)
    f32 = torch.float32
    u = v.to(f32) if pre_gate is None else v.to(f32) * pre_gate.to(f32)
    g = dy.to(f32)
    d_post = torch.zeros_like(v)
    if post_gate is not None:
        inner = fftconv_rows(v.to(f32), spectrum, D, pre_gate, None)  # recomputed instead of stored
        d_post = (g * inner).to(v.dtype)
        g = g * post_gate.to(f32)
    # du = correlation of g with h (+ D g): the same kernel with the conjugate spectrum
    du = fftconv_rows(g, spectrum, D, None, None, conj=True)
    dv = du if pre_gate is None else du * pre_gate.to(f32)
    d_pre = torch.zeros_like(v) if pre_gate is None else (du * v.to(f32)).to(v.dtype)
    dD = (g * u).sum(dim=(0, 2)).to(D.dtype) if D is not None else torch.zeros(C, dtype=v.dtype, device=v.device)
    # dh[c, j] = sum_b sum_t g[t] u[t - j]: correlation of g against the spectrum of each row of u, summed over b
    u_spec = filter_spectrum(u.reshape(B * C, L), L)
    dh_rows = fftconv_rows(g.reshape(1, B * C, L), u_spec, None, None, None, conj=True, per_row_spectrum=True)
    dh_full = dh_rows.view(B, C, L).sum(0)
    dh = torch.zeros_like(h, dtype=f32)
    taps = min(h.shape[-1], L)
    dh[..., :taps] = dh_full[..., :taps]
    return dv.to(v.dtype), dh.to(h.dtype), dD, d_pre, d_post


@_long_conv_backward_op.register_fake
def _(dy, v, h, D, pre_gate, post_gate):
    C = v.shape[1]
    d_dtype = D.dtype if D is not None else v.dtype
    return (torch.empty_like(v), torch.empty_like(h), v.new_empty(C, dtype=d_dtype), torch.empty_like(v),
            torch.empty_like(v))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, dy):
    v, h, D, pre_gate, post_gate = ctx.saved_tensors
    dv, dh, dD, d_pre, d_post = _long_conv_backward_op(dy.contiguous(), v, h, D, pre_gate, post_gate)
    return (dv, dh, dD if D is not None else None, d_pre if pre_gate is not None else None,
            d_post if post_gate is not None else None)


_long_conv_op.register_autograd(_backward, setup_context=_setup_context)


def triton_long_conv(v: torch.Tensor, h: torch.Tensor, D: torch.Tensor | None = None,
                     pre_gate: torch.Tensor | None = None, post_gate: torch.Tensor | None = None) -> torch.Tensor:
    """Fused gated causal long convolution (see ``hyena_hf.ops.long_conv``) by the Triton kernel."""
    return _long_conv_op(v, h, D, pre_gate, post_gate)


__all__ = ["MAX_FUSED_LEN", "triton_long_conv", "fftconv_rows", "fftconv_rows_multipass", "filter_spectrum"]
