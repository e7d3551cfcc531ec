"""Triton kernels for the long convolution (installed as ``hyena_hf.kernels``).

``triton_long_conv(v, h, D, pre_gate, post_gate)`` is a ``torch.library`` custom op (``hyena_hf::long_conv``) with
an autograd formula, so ``torch.compile`` keeps it in the graph. Importing this package needs ``triton``; the
dispatch in ``hyena_hf.ops`` falls back to the PyTorch path when the import fails.
"""

from __future__ import annotations

import torch

from .backward import long_conv_backward  # noqa: F401  (ImportError here means: no triton)
from .dft import filter_spectrum
from .fftconv import MAX_FUSED_LEN, fftconv_rows
from .multipass import fftconv_rows_multipass, filter_gradient_multipass


@torch.library.custom_op("hyena_hf::long_conv", mutates_args=())
def _long_conv_op(
    v: torch.Tensor,
    h: torch.Tensor,
    D: torch.Tensor | None,
    pre_gate: torch.Tensor | None,
    post_gate: torch.Tensor | None,
) -> torch.Tensor:
    return fftconv_rows(v, filter_spectrum(h, v.shape[-1]), D, pre_gate, post_gate)


@_long_conv_op.register_fake
def _(v, h, D, pre_gate, post_gate):
    return torch.empty_like(v)


@torch.library.custom_op("hyena_hf::long_conv_backward", mutates_args=())
def _long_conv_backward_op(
    dy: torch.Tensor,
    v: torch.Tensor,
    h: torch.Tensor,
    D: torch.Tensor | None,
    pre_gate: torch.Tensor | None,
    post_gate: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for (v, h, D, pre, post); empty tensors stand for inputs that were None."""
    return long_conv_backward(dy, v, h, D, pre_gate, post_gate)


@_long_conv_backward_op.register_fake
def _(dy, v, h, D, pre_gate, post_gate):
    def grad_like(t):
        return v.new_empty(0) if t is None else torch.empty_like(t)

    return torch.empty_like(v), torch.empty_like(h), grad_like(D), grad_like(pre_gate), grad_like(post_gate)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, dy):
    v, h, D, pre_gate, post_gate = ctx.saved_tensors
    dv, dh, dD, d_pre, d_post = _long_conv_backward_op(dy, v, h, D, pre_gate, post_gate)
    return (
        dv,
        dh,
        dD if D is not None else None,
        d_pre if pre_gate is not None else None,
        d_post if post_gate is not None else None,
    )


_long_conv_op.register_autograd(_backward, setup_context=_setup_context)


def triton_long_conv(
    v: torch.Tensor,
    h: torch.Tensor,
    D: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
    post_gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fused gated causal long convolution (see ``hyena_hf.ops.long_conv``) by the Triton kernel. Gates broadcast
    over batch or channels (H3's padding mask is (B, 1, L)) are expanded here, outside the op: the kernels index every
    gate as a (B, C, L) tensor, and autograd of the expand sums their gradients back to the broadcast shape."""
    pre_gate, post_gate = (g if g is None or g.shape == v.shape else g.expand(v.shape) for g in (pre_gate, post_gate))
    return _long_conv_op(v, h, D, pre_gate, post_gate)


__all__ = [
    "MAX_FUSED_LEN",
    "triton_long_conv",
    "fftconv_rows",
    "fftconv_rows_multipass",
    "filter_gradient_multipass",
    "filter_spectrum",
    "long_conv_backward",
]
