"""The CPU execution engine of the Hyena layers (the long convolution's engines are in :mod:`hyena_hf.ops`).

The modeling file states what each layer computes with plain modules; on CPU these functions compute the same thing
faster, and each has that module path as its reference twin (``tests/test_inference_paths.py`` compares them):

* the short causal filter as k shifted multiply-adds, with an explicit backward under autograd;
* projections written straight into the convolutions' channels-first layout by one GEMM;
* inference of the Hyena mixer a block of channels at a time, and of the MLP a block of rows at a time with the
  tanh-GELU fused into fc1's GEMM by oneDNN;
* the implicit filter's sine layers and decay modulation in place, residual sums written into branch outputs no
  hook has seen.

The whole-backbone engine that chains them in reused buffers is :mod:`hyena_hf.cpu_backbone`.

Modules with hooks or wrappers (PEFT adapters, accelerate offload, quantisation) are always called as modules.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .filter_spectra import keep_spectra, spectra_plan
from .ops import DIRECT_CONV_MAX_LEN, exporting, filter_spectra_shape, long_conv_torch, needs_autograd, resolve_impl
from .precision import linear_in_dtype


def unhooked(module: nn.Module, pre_hooks: bool = True) -> bool:
    """No forward hook (nor pre-hook, unless ``pre_hooks`` is False) and no accelerate hook on ``module`` itself."""
    return not (module._forward_hooks or (pre_hooks and module._forward_pre_hooks) or hasattr(module, "_hf_hook"))


def is_plain_module(module: nn.Module, cls: type) -> bool:
    """Exactly ``cls`` with no hooks: not wrapped by PEFT, quantised, or given accelerate / forward hooks."""
    return type(module) is cls and unhooked(module)


def project_channels_first(
    weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``x (B, L, in) @ weight.T + bias`` as ``(B, out, L)``, by one batched GEMM ``W @ x^T`` writing that layout."""
    weight = weight.expand(x.shape[0], -1, -1)
    if bias is None:
        return torch.bmm(weight, x.mT, out=out)
    return torch.baddbmm(bias[:, None], weight, x.mT, out=out)


def linear_channels_first(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` for ``x (B, L, in)``, returned as ``(B, out, L)`` (the layout of the convolutions).

    A plain ``nn.Linear`` is computed by :func:`project_channels_first`: on CPU a transpose copy of the result costs
    about twice the GEMM. Anything else is called as a module, then transposed.
    """
    if not is_plain_module(linear, nn.Linear):
        return linear(x).transpose(1, 2)
    return project_channels_first(linear.weight, linear.bias, x)


# Inference (no autograd) on CPU runs the MLP a block of rows at a time and the Hyena mixer a block of channels at a
# time: the intermediate tensors then stay small enough to be reused by the allocator (glibc maps every allocation over
# 32 MB afresh) and to sit in cache. On this 2-core machine a fresh tensor of many MB costs more in page faults than
# the arithmetic done on it; see benchmarks/bench_model.py for the effect on the whole model.
INFERENCE_CHUNK_ROWS = 2048
INFERENCE_BLOCK_BYTES = 16 << 20
MAX_PROJECTION_PASSES = 16  # the channel-blocked mixer reads the hidden state at most this many times per layer


def inference_only(*tensors: torch.Tensor) -> bool:
    """True when nothing here needs autograd, no autocast is active and nothing is traced (the in-place / out= fast
    paths apply)."""
    return not needs_autograd(*tensors) and not torch.is_autocast_enabled(tensors[0].device.type) and not exporting()


def project_filter_rows(
    linear: nn.Linear, features: torch.Tensor, rows: slice, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The implicit filter's output projection for the channels ``rows``: ``features (1, L, width)`` -> ``(rows, L)``,
    channels first (the layout of the FFT), into ``out`` when given (inference). A plain module is read directly (one
    GEMM, only the rows asked for); a hooked or wrapped one (offload, adapters) is called as a module, for all
    channels."""
    if linear.weight.dtype == features.dtype and not is_plain_module(linear, nn.Linear):
        h = linear(features)[0].t()[rows]  # a copy: the modulation runs in place, and a hook may keep the output
        return h.clone() if out is None else out.copy_(h)
    return torch.matmul(linear.weight[rows].to(features.dtype), features[0].t(), out=out)


def sine_of_linear(linear: nn.Linear, x: torch.Tensor, freq: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``sin(freq * linear(x))`` computed in ``dtype``, ``x (1, L, in)`` -> ``(1, L, out)``: a layer of the implicit
    filter's MLP. In inference through a plain module the product and the sine run in place on the GEMM's output (a
    fresh tensor each costs more in page faults than the arithmetic: 256 MB per layer at 1M tokens)."""
    y = linear_in_dtype(linear, x, dtype)
    if inference_only(y) and is_plain_module(linear, nn.Linear):
        return y.mul_(freq).sin_()
    return torch.sin(freq * y)


DECAY_CHUNK_COLUMNS = 1 << 16


def scale_by_decay(h: torch.Tensor, rate: torch.Tensor, t: torch.Tensor, shift: float) -> torch.Tensor:
    """``h * (exp(-outer(rate, t)) + shift)`` for ``h (C, L)``, ``rate (C,)``, ``t (L,)``. In inference in place, a
    chunk of columns at a time: the (C, L) decay is never materialised (64 MB per 16 channels at 1M tokens)."""
    if not inference_only(h):
        return h * (torch.exp(-torch.outer(rate, t)) + shift)
    for start in range(0, h.shape[-1], DECAY_CHUNK_COLUMNS):
        columns = slice(start, start + DECAY_CHUNK_COLUMNS)
        h[:, columns].mul_(torch.outer(rate, t[columns]).neg_().exp_().add_(shift))
    return h


# Below this size per (B, L, d) tensor the allocator hands back freed memory without page faults (glibc's largest mmap
# threshold; a GPU's caching allocator always), so a fresh residual sum costs nothing an in-place one saves.
IN_PLACE_RESIDUAL_MIN_BYTES = 32 << 20


def residual_adds_in_place(model: nn.Module, hidden_states: torch.Tensor) -> bool:
    """Whether inference may write the residual sums into the blocks' branch outputs, for ``hidden_states (B, L, d)``:
    tensors large enough to gain (``IN_PLACE_RESIDUAL_MIN_BYTES``), and no one else sees those outputs: no forward
    hook on any submodule of ``model`` or registered globally (an activation-capturing hook keeps the tensor it was
    given), no accelerate hook. The size test comes first: walking every module costs ~0.4 ms for a 12-layer model,
    a tenth of a small model's decoding step."""
    if hidden_states.numel() * hidden_states.element_size() < IN_PLACE_RESIDUAL_MIN_BYTES:
        return False
    if torch.nn.modules.module._global_forward_hooks:
        return False
    return all(unhooked(module, pre_hooks=False) for module in model.modules())


def residual_add(branch: torch.Tensor, residual: torch.Tensor | None, in_place: bool) -> torch.Tensor:
    """``branch + residual`` (``branch`` alone for the first block), both ``(B, L, d)``. In inference with
    ``in_place`` (see :func:`residual_adds_in_place`) the sum is written into ``branch``: a mixer's or MLP's fresh
    output, used once, and a new (B, L, d) tensor per add (1 GiB at 1M tokens and width 256) raises the peak memory
    and the page faults. Not where ``branch`` is the model's input (first block, residual None), or where the sum
    needs a wider dtype (float32 residual)."""
    if residual is None:
        return branch
    wide_enough = branch.dtype == torch.promote_types(branch.dtype, residual.dtype)
    if in_place and wide_enough and inference_only(branch, residual):
        return branch.add_(residual)
    return branch + residual


def shifted_depthwise_conv(
    u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor
) -> torch.Tensor:
    """Causal depthwise convolution as k shifted multiply-adds: out[..., t] = bias + sum_s weight[:, k-1-s] u[..., t-s]
    (u is zero before its first column); ``weight (C, k)``, ``u`` and ``out (B, C, L)``."""
    k = weight.shape[-1]
    if bias is None:
        torch.mul(u, weight[:, k - 1 :], out=out)
    else:
        torch.addcmul(bias[:, None], u, weight[:, k - 1 :], out=out)
    for shift in range(1, min(k, u.shape[-1])):
        out[..., shift:].addcmul_(u[..., :-shift], weight[:, k - 1 - shift : k - shift])
    return out


def short_filter_of_projection(
    projected: torch.Tensor,
    projection_bias: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
) -> torch.Tensor:
    """``shifted_depthwise_conv(projected + projection_bias[:, None], weight, bias, out)`` for a projection computed
    without its bias (``projected``, ``out (B, C, L)``; ``weight (C, k)``; biases ``(C,)``): the projection bias
    passes through the filter as the constant ``projection_bias * weight.sum(-1)``, less the taps that fall before
    the sequence in the first k-1 columns. This saves the GEMM's broadcast copy of its bias, a full pass over the
    (B, C, L) output."""
    if projection_bias is None:
        return shifted_depthwise_conv(projected, weight, bias, out)
    k = weight.shape[-1]
    folded = projection_bias * weight.sum(-1)
    shifted_depthwise_conv(projected, weight, folded if bias is None else folded + bias, out)
    for column in range(min(k - 1, out.shape[-1])):  # out[t] has only t + 1 inputs: drop the bias of the k-1-t others
        out[..., column].sub_(projection_bias * weight[:, : k - 1 - column].sum(-1))
    return out


class ShiftedShortConv(torch.autograd.Function):
    """The short causal filter under autograd on CPU: shifted multiply-adds forward, and backward by the same shifts
    (du) and per-shift reductions (dw): 6x less time than ``nn.Conv1d``'s mkldnn backward at 2K tokens, where
    autograd through the in-place shifts was 2x slower than it."""

    @staticmethod
    def forward(ctx, u, weight, bias):
        ctx.save_for_backward(u, weight)
        ctx.has_bias = bias is not None
        return shifted_depthwise_conv(u, weight, bias, torch.empty_like(u))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        u, weight = ctx.saved_tensors
        k, seqlen = weight.shape[-1], u.shape[-1]
        du = dw = db = None
        if ctx.needs_input_grad[0]:  # du[t] = sum_s w[k-1-s] grad[t+s]
            du = grad * weight[:, k - 1 :]
            for shift in range(1, min(k, seqlen)):
                du[..., :-shift].addcmul_(grad[..., shift:], weight[:, k - 1 - shift : k - shift])
        if ctx.needs_input_grad[1]:  # dw[k-1-s] = sum_{b,t} grad[t] u[t-s]
            dw = torch.zeros_like(weight)
            for shift in range(min(k, seqlen)):
                dw[:, k - 1 - shift] = torch.einsum("bct,bct->c", grad[..., shift:], u[..., : seqlen - shift])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = grad.sum(dim=(0, 2))
        return du, dw, db


def causal_short_conv(conv: nn.Conv1d, u: torch.Tensor) -> torch.Tensor:
    """The short causal depthwise filter, ``conv(u)[..., :L]`` (``conv`` pads k-1 on both sides; the tail is dropped).

    For a plain ``nn.Conv1d`` it runs as k shifted multiply-adds: without autograd 2-6x faster on CPU than the padded
    convolution from 2K to 32K tokens; under autograd on CPU with the explicit backward of :class:`ShiftedShortConv`.
    Hooked or wrapped modules, autocast and autograd on GPU call the module.
    """
    if not is_plain_module(conv, nn.Conv1d) or torch.is_autocast_enabled(u.device.type) or exporting():
        return conv(u)[..., : u.shape[-1]]
    if inference_only(u, conv.weight):
        return shifted_depthwise_conv(u, conv.weight[:, 0], conv.bias, torch.empty_like(u))
    if u.device.type != "cpu":
        return conv(u)[..., : u.shape[-1]]
    return ShiftedShortConv.apply(u, conv.weight[:, 0], conv.bias)


# Up to this many elements in (B, C, T) the product-then-sum of a decoding step runs in cache and beats a batched
# dot product (2 x 256 x 4096: 0.52 vs 0.66 ms); beyond it, for a batch, the product is a fresh tensor page-faulted
# in every token and the batched dot product wins (4 x 256 x 32768: 6.1 vs 37 ms; 8 x 256 x 4096: 1.2 vs 8.9 ms;
# 2-core Xeon). A single sequence keeps the product: the batched form took 2x longer per token at 16K tokens.
HISTORY_PRODUCT_MAX_ELEMENTS = 1 << 22


def convolution_at_last_position(history: torch.Tensor, reversed_filter: torch.Tensor) -> torch.Tensor:
    """The causal convolution's output at the last position of ``history (B, C, T)``: ``sum_t history[..., t] *
    reversed_filter[:, t]`` for the filter's last T taps reversed, ``reversed_filter (C, T)`` -> ``(B, C)``."""
    if history.shape[0] == 1 or history.numel() <= HISTORY_PRODUCT_MAX_ELEMENTS:
        return (history * reversed_filter).sum(-1)
    return torch.einsum("bct,ct->bc", history, reversed_filter)


def short_conv_last_output(conv: nn.Conv1d, window: torch.Tensor) -> torch.Tensor:
    """The short filter's output at the last position of ``window (B, C, k)``, the only one decoding needs. A plain
    ``nn.Conv1d`` is one multiply-sum (a padded mkldnn convolution costs ~0.1 ms per layer per token on CPU); hooked or
    wrapped modules (offload, adapters) are called."""
    k = window.shape[-1] - 1
    if not is_plain_module(conv, nn.Conv1d):
        return conv(window)[..., k]
    out = torch.einsum("bck,ck->bc", window, conv.weight[:, 0].to(window.dtype))
    return out if conv.bias is None else out + conv.bias.to(out.dtype)


def channel_blocks_apply(mixer, hidden_states: torch.Tensor) -> bool:
    """Whether :func:`hyena_mixer_in_channel_blocks` serves this call of a Hyena mixer: CPU inference through plain
    modules with the pure-PyTorch convolution (its twin is the mixer's module path)."""
    plain = (
        is_plain_module(mixer.in_proj, nn.Linear)
        and is_plain_module(mixer.short_filter, nn.Conv1d)
        and (mixer.config.filter_type == "modal" or is_plain_module(mixer.filter.out, nn.Linear))
    )
    return (
        plain
        and hidden_states.device.type == "cpu"
        and not (mixer.training and mixer.dropout.p > 0)
        and inference_only(hidden_states, mixer.in_proj.weight, mixer.short_filter.weight)
        and resolve_impl(mixer.config.long_conv_impl, hidden_states.device) == "torch"
    )


def reused_buffer(workspace: dict, name: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """A tensor of ``shape`` with ``like``'s dtype and device: ``workspace[name]`` (or a prefix of it) when it is
    large enough, else a fresh one, kept there for the next call."""
    numel = math.prod(shape)
    buffer = workspace.get(name)
    if buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype or buffer.device != like.device:
        buffer = workspace[name] = like.new_empty(numel)
    return buffer[:numel].view(shape)


def hyena_mixer_in_channel_blocks(
    mixer,
    hidden_states: torch.Tensor,
    padding_mask: torch.Tensor | None,
    out: torch.Tensor | None = None,
    workspace: dict | None = None,
    record_prefill=None,
) -> torch.Tensor:
    """A Hyena mixer from ``hidden_states (B, L, d)`` to the gated output ``(B, d, L)`` before out_proj (into ``out``
    when given). Everything between in_proj and out_proj acts on each channel separately, so inference runs it a
    block of channels at a time: the projection rows, short filter, filters and gated long convolutions of a block.
    Only the output is full size; the per-block buffers come from ``workspace`` (see :func:`reused_buffer`).
    ``padding_mask``: ``(B, 1, L)`` multiplier or None.

    ``record_prefill`` (a prefill's decoding state, see :func:`hyena_hf.decoding.prefill_recorder`) is called at the
    end with what the module path records: the short filter's last inputs ``(B, (order+1) d, <= k-1)``, the skips
    ``(order-1, d)`` or None, and the input of each long convolution ``(B, d, L)``."""
    d, order = mixer.config.hidden_size, mixer.config.hyena_order
    steps, groups = order - 1, order + 1  # long convolutions; projections x_0 .. x_{order-1}, v
    bsz, seqlen, _ = hidden_states.shape
    proj_w = mixer.in_proj.weight.view(groups, d, -1)
    proj_b = None if mixer.in_proj.bias is None else mixer.in_proj.bias.view(groups, d)
    conv_w = mixer.short_filter.weight.view(groups, d, -1)
    conv_b = None if mixer.short_filter.bias is None else mixer.short_filter.bias.view(groups, d)
    skip = mixer.filter.D.view(d, steps) if mixer.config.filter_use_bias else None
    # The filters' spectra, kept from the last forward at this length where they are (see hyena_hf.filter_spectra).
    kept = None
    if seqlen > DIRECT_CONV_MAX_LEN:
        shape, complex_dtype = filter_spectra_shape(d, seqlen, hidden_states.dtype)
        kept = spectra_plan(mixer.filter, seqlen, [shape] * steps, complex_dtype)
    features = None if kept is not None and kept.ready else mixer.filter.features(seqlen)
    out = hidden_states.new_empty(bsz, d, seqlen) if out is None else out
    # A block's projection is a GEMM reading the whole hidden state: sized by bytes alone, a block at 1M tokens
    # is one channel and the hidden state is re-read d times. At least d / MAX_PROJECTION_PASSES channels.
    block = max(
        INFERENCE_BLOCK_BYTES // (groups * bsz * seqlen * hidden_states.element_size()),
        -(-d // MAX_PROJECTION_PASSES),
    )
    # Two scratch buffers serve every block (fresh ones per block would each be page-faulted in again).
    workspace = {} if workspace is None else workspace  # also the FFT buffers, from block to block
    scratch = reused_buffer(workspace, "mixer_scratch", (2, bsz * min(block, d) * groups * seqlen), hidden_states)
    # A prefill keeps every convolution's input (the decoding state's history).
    conv_inputs = None if record_prefill is None else hidden_states.new_empty(steps, bsz, d, seqlen)
    filters = None
    if torch.is_tensor(features):  # implicit filters (a modal filter computes its own from the poles)
        filters = reused_buffer(workspace, "filters", (min(block, d) * steps, seqlen), features)
    for c0 in range(0, d, block):
        c1 = min(d, c0 + block)
        rows = (c1 - c0) * groups
        u, uc = (buffer[: bsz * rows * seqlen].view(bsz, rows, seqlen) for buffer in scratch)
        block_proj_b = None if proj_b is None else proj_b[:, c0:c1].reshape(rows)
        block_conv_w = conv_w[:, c0:c1].reshape(rows, -1)
        block_conv_b = None if conv_b is None else conv_b[:, c0:c1].reshape(rows)
        if padding_mask is None:  # the projection bias goes through the short filter (see short_filter_of_projection)
            project_channels_first(proj_w[:, c0:c1].reshape(rows, -1), None, hidden_states, out=u)
            short_filter_of_projection(u, block_proj_b, block_conv_w, block_conv_b, uc)
        else:  # padded positions are zero after the bias: it is added first
            project_channels_first(proj_w[:, c0:c1].reshape(rows, -1), block_proj_b, hidden_states, out=u)
            shifted_depthwise_conv(u.mul_(padding_mask), block_conv_w, block_conv_b, uc)
        xs = uc.view(bsz, groups, c1 - c0, seqlen).unbind(1)
        h = None
        if features is not None:
            into = None if filters is None else filters[: (c1 - c0) * steps]
            h = mixer.filter.filters_for(features, slice(c0 * steps, c1 * steps), into).view(c1 - c0, steps, seqlen)
        v = xs[-1]
        for o in range(steps):  # gates x_{order-1} .. x_1, then x_0 after the last convolution
            pre_gate = xs[order - 1 - o] if padding_mask is None else xs[order - 1 - o] * padding_mask
            last = o == steps - 1
            if conv_inputs is not None:  # the gated input, as the module path records it
                v, pre_gate = torch.mul(v, pre_gate, out=conv_inputs[o, :, c0:c1]), None
            v = long_conv_torch(
                v,
                None if h is None else h[:, o],
                None if skip is None or h is None else skip[c0:c1, o],
                pre_gate,
                xs[0] if last else None,
                out=out[:, c0:c1] if last else None,
                workspace=workspace,
                spectra=None if kept is None else kept.spectra[o][c0:c1],
            )
    if kept is not None:
        keep_spectra(mixer.filter, kept)
    if record_prefill is not None:
        window = mixer.config.short_filter_order - 1
        last_inputs = None
        if window > 0:
            last_inputs = linear_channels_first(mixer.in_proj, hidden_states[:, -window:])
            if padding_mask is not None:
                last_inputs = last_inputs * padding_mask[..., -window:]
        record_prefill(last_inputs, None if skip is None else skip.t(), conv_inputs.unbind(0))
    return out


def mlp_rows_apply(mlp, x: torch.Tensor) -> bool:
    """Whether :func:`mlp_in_row_blocks` serves this call of the MLP (inference through plain modules)."""
    plain = is_plain_module(mlp.fc1, nn.Linear) and is_plain_module(mlp.fc2, nn.Linear)
    return plain and inference_only(x, mlp.fc1.weight, mlp.fc2.weight)


def onednn_fuses(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN can run ``x @ weight.T`` with its activation fused into the GEMM's epilogue: CPU float32 (or
    bfloat16 where the CPU supports it) with oneDNN available and enabled. Not under torch.compile: Inductor lowers
    the fused op only for frozen weights, and fuses the activation itself."""
    # Checked before asking oneDNN: Dynamo refuses to trace torch.backends.mkldnn.is_available (a graph break).
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    if x.dtype == torch.bfloat16:
        return weight.dtype == x.dtype and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return x.dtype == weight.dtype == torch.float32


def linear_tanh_gelu(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``gelu_tanh(linear(x))`` for ``x (rows, in)`` -> ``(rows, out)``, without autograd. Where oneDNN fuses it, the
    GELU runs in the GEMM's epilogue on the tile still in cache: aten's tanh-GELU is a separate pass costing about
    half the GEMM at width 256 (the MLP 1.2x faster on this 2-core machine, benchmarks/bench_floor.py)."""
    if onednn_fuses(x, linear.weight):
        bias = None if linear.bias is None else linear.bias.contiguous()  # a strided bias is read wrongly by oneDNN
        return torch.ops.mkldnn._linear_pointwise(x, linear.weight, bias, "gelu", [], "tanh")
    return torch.ops.aten.gelu_(linear(x), approximate="tanh")


def mlp_in_row_blocks(
    mlp, x: torch.Tensor, norm: nn.LayerNorm | None = None, add_to_input: bool = False
) -> torch.Tensor:
    """fc1 -> tanh-GELU -> fc2 on ``x (..., d)`` (on ``norm(x)`` when a LayerNorm is given), a block of rows at a
    time: each block's (rows, 4d) intermediate stays in cache and the GELU is fused into fc1 or runs in place. With
    ``add_to_input`` the result is added into ``x`` (contiguous; the residual stream) by fc2's GEMM accumulating
    into its rows, and ``x`` is returned; else a fresh tensor. Its twin is the MLP's module path (plus the norm and
    the residual sum)."""
    rows = x.view(-1, x.shape[-1]) if add_to_input else x.reshape(-1, x.shape[-1])
    out = rows if add_to_input else rows.new_empty(rows.shape[0], mlp.fc2.out_features)
    for start in range(0, rows.shape[0], INFERENCE_CHUNK_ROWS):
        block = slice(start, start + INFERENCE_CHUNK_ROWS)
        inputs = (
            rows[block]
            if norm is None
            else nn.functional.layer_norm(rows[block], norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        )
        h = linear_tanh_gelu(mlp.fc1, inputs)
        if add_to_input:
            out[block].addmm_(h, mlp.fc2.weight.t())
            if mlp.fc2.bias is not None:
                out[block].add_(mlp.fc2.bias)
        elif mlp.fc2.bias is None:
            torch.mm(h, mlp.fc2.weight.t(), out=out[block])
        else:
            torch.addmm(mlp.fc2.bias, h, mlp.fc2.weight.t(), out=out[block])
    return x if add_to_input else out.view(*x.shape[:-1], -1)


def hyena_mixer_inference(mixer, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None, record_prefill=None):
    """The CPU inference engine of a Hyena mixer: its gated output ``(B, d, L)`` before out_proj by
    :func:`hyena_mixer_in_channel_blocks` where that serves the call (:func:`channel_blocks_apply`), else None;
    ``record_prefill`` as there."""
    if not channel_blocks_apply(mixer, hidden_states):
        return None
    return hyena_mixer_in_channel_blocks(mixer, hidden_states, padding_mask, record_prefill=record_prefill)


def mlp_inference(mlp, x: torch.Tensor):
    """The CPU inference engine of the MLP, ``x (..., d)`` -> ``(..., d)``: :func:`mlp_in_row_blocks` where it
    serves the call, else None."""
    return mlp_in_row_blocks(mlp, x) if mlp_rows_apply(mlp, x) else None
