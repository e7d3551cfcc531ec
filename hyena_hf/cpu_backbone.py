"""The CPU inference engine of the whole backbone: every block's (B, L, d) tensors live in three buffers reused from
block to block, where the module path allocates five fresh ones per block.

At long lengths a fresh tensor costs more in page faults than the arithmetic done on it (1 GiB per tensor at 1M
tokens and width 256; glibc maps every allocation over 32 MB afresh), so the blocks run as

    R = embeddings;  for each block:  X = LN1(R);  R += mixer(X);  R += MLP(LN2(R))
    output = LN_f(R)

with the residual stream R, the normalised input X and the Hyena mixer's channels-first output in fixed buffers.
The out projection and fc2 are GEMMs accumulating into R (no branch tensor); the MLP half runs a block of rows at a
time, from LN2 to fc2, on rows still in cache. Its twin is the module path of
:class:`~hyena_hf.modeling_hyena.HyenaModel` (the blocks called one by one), compared in
``tests/test_inference_paths.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from .decoding import h3_prefill, prefill_recorder
from .filter_spectra import SpectraPlan, filter_inputs, keep_spectra, spectra_plan
from .model_inputs import ModelInputs
from .ops import DIRECT_CONV_MAX_LEN, fft_buffers_reused, filter_spectra_shape, long_conv_torch, resolve_impl
from .ops_cpu import (
    INFERENCE_CHUNK_ROWS,
    channel_blocks_apply,
    hyena_mixer_in_channel_blocks,
    inference_only,
    linear_channels_first,
    mlp_in_row_blocks,
    reused_buffer,
    unhooked,
)

# Below this size per (B, L, d) tensor the module path is as fast (256 tokens at width 256, 4 layers: 12.2 vs 12.1 ms);
# from 1K tokens on the engine measured 18 % faster (1K), 12-20 % (8K), 5-9 % (16K) on a 2-core Xeon: the module path's
# fresh tensors and per-layer FFT buffers are page-faulted in again on every forward (30-50 thousand faults at 8K).
MIN_TENSOR_BYTES = 1 << 18
STANDARD_MODULES = (nn.Linear, nn.LayerNorm, nn.Conv1d, nn.Dropout, nn.Embedding, nn.ModuleList)


def _plain_model(model: nn.Module) -> bool:
    """Every submodule is the project's own class or a standard torch layer (no PEFT, quantised or user-defined
    replacement the engine would bypass), in eval mode, with no hook of any kind (see :func:`ops_cpu.unhooked`)."""
    if torch.nn.modules.module._global_forward_hooks or torch.nn.modules.module._global_forward_pre_hooks:
        return False
    own = type(model).__module__
    return all(
        (type(module).__module__ == own or type(module) in STANDARD_MODULES)
        and unhooked(module)
        and not module.training
        for module in model.modules()
    )


def backbone_serves(model, inputs: ModelInputs, cache, outputs_asked: bool) -> bool:
    """Whether :func:`backbone_forward` serves this forward of ``model`` (a HyenaModel): CPU inference in eval
    mode of (B, L, d) tensors of at least ``MIN_TENSOR_BYTES``, without per-layer outputs or a decoding state other
    than an empty one to fill (a prefill), plain modules, one floating dtype throughout (float32 or float64)."""
    embeds = inputs.embeds
    dtype = embeds.dtype
    return (
        embeds.device.type == "cpu"
        and embeds.numel() * embeds.element_size() >= MIN_TENSOR_BYTES
        and (cache is None or cache.get_seq_length() == 0)
        and not outputs_asked
        and dtype in (torch.float32, torch.float64)
        and all(p.dtype == dtype for p in model.parameters())
        and inference_only(embeds, model.norm_f.weight)
        and _plain_model(model)
    )


def _layer_norm_into(norm: nn.LayerNorm, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` written into ``out``, both ``(B, L, d)``, a block of rows at a time (LayerNorm has no ``out=``;
    each block's result is still in cache when copied)."""
    rows, out_rows = x.view(-1, x.shape[-1]), out.view(-1, x.shape[-1])
    for start in range(0, rows.shape[0], INFERENCE_CHUNK_ROWS):
        block = slice(start, start + INFERENCE_CHUNK_ROWS)
        out_rows[block] = nn.functional.layer_norm(rows[block], norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return out


def _add_out_projection(linear: nn.Linear, gated: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``residual += linear(gated.mT)`` for the channels-first ``gated (B, d, L)`` and ``residual (B, L, d)``: one
    batched GEMM accumulating into the residual (the transpose read in place), then the bias; no branch tensor."""
    residual.baddbmm_(gated.mT, linear.weight.t().expand(gated.shape[0], -1, -1))
    return residual if linear.bias is None else residual.add_(linear.bias)


def _h3_kept_spectra(mixer, x: torch.Tensor) -> SpectraPlan | None:
    """The spectra of an H3 mixer's two SSM kernels (shift, then diagonal) at ``x``'s length, kept from the last
    forward at that length (see :mod:`hyena_hf.filter_spectra`), or None where they are not kept or not used."""
    d, seqlen = x.shape[-1], x.shape[1]
    if seqlen <= DIRECT_CONV_MAX_LEN or resolve_impl(mixer.config.long_conv_impl, x.device) != "torch":
        return None
    taps = mixer.config.ssm_state_size  # the shift SSM is an FIR filter of d_state taps
    (shift, complex_dtype), (diagonal, _) = (filter_spectra_shape(d, seqlen, x.dtype, n) for n in (taps, seqlen))
    inputs = filter_inputs(mixer, seqlen, recurse=False)  # the SSM parameters, not the projections
    return spectra_plan(mixer, seqlen, [shift, diagonal], complex_dtype, inputs)


def _h3_mixer(mixer, x: torch.Tensor, padding: torch.Tensor | None, state, buffers: dict) -> torch.Tensor:
    """An H3 mixer's output ``(B, L, d)`` for ``x (B, L, d)``, as its module path computes it, but reading its SSM
    kernels' kept spectra where there are some (or keeping them); else the module itself. Fills a prefill's
    ``state`` (or None) as the module does."""
    kept = _h3_kept_spectra(mixer, x)
    workspaces = buffers.setdefault("long_conv_by_fft_size", {})  # H3's FFT buffers, from layer to layer
    if kept is None:
        with fft_buffers_reused(workspaces):
            return mixer(x, padding, state)
    q, k, v = (linear_channels_first(linear, x) for linear in (mixer.q_proj, mixer.k_proj, mixer.v_proj))
    seqlen, taps = x.shape[1], mixer.config.ssm_state_size
    computed = not kept.ready  # else read: no kernels, the skips folded into the spectra
    shift_kernel, shift_skip = (mixer.shift_kernel(seqlen), mixer.shift_D) if computed else (None, None)
    diagonal_kernel, skip = (mixer.ssm_kernel(seqlen), mixer.D) if computed else (None, None)
    # 2. shift SSM on k, gated by v; 3. diagonal SSM on k*v, gated by q
    shift_buffers, diagonal_buffers = (workspaces.setdefault(name, {}) for name in ("shift", "diagonal"))
    kv = long_conv_torch(k, shift_kernel, shift_skip, padding, v, None, shift_buffers, kept.spectra[0], taps)
    y = long_conv_torch(kv, diagonal_kernel, skip, padding, q, None, diagonal_buffers, kept.spectra[1])
    if state is not None:
        h3_prefill(mixer, k, kv, padding, state)
    keep_spectra(mixer, kept)
    return mixer.out_proj(y.transpose(1, 2))


def _add_mixer(block, x: torch.Tensor, inputs: ModelInputs, buffers: dict, state, residual: torch.Tensor) -> None:
    """``residual += mixer(x)`` for ``x`` and ``residual (B, L, d)``, filling the mixer's decoding ``state`` of a
    prefill (or None): a Hyena mixer through the channel-blocked engine and an out projection accumulating into the
    residual; an H3 mixer reading its kept kernel spectra where it can (:func:`_h3_mixer`); attention mixers and
    Hyena mixers the engine does not serve are called as modules."""
    mixer = block.mixer
    if block.mixer_type == "attention":
        residual.add_(mixer(x, inputs.attention, inputs.positions, state, False)[0])
    elif block.mixer_type == "h3":
        residual.add_(_h3_mixer(mixer, x, inputs.padding, state, buffers))
    elif not channel_blocks_apply(mixer, x):
        with fft_buffers_reused(buffers.setdefault("long_conv_by_fft_size", {})):
            residual.add_(mixer(x, inputs.padding, state))
    else:
        bsz, seqlen, d = x.shape
        gated = reused_buffer(buffers, "gated", (bsz, d, seqlen), x)
        record = prefill_recorder(mixer, state)
        hyena_mixer_in_channel_blocks(mixer, x, inputs.padding, out=gated, workspace=buffers, record_prefill=record)
        _add_out_projection(mixer.out_proj, gated, residual)


def backbone_forward(model, inputs: ModelInputs, cache=None) -> torch.Tensor:
    """The final hidden states ``(B, L, d)`` of ``model`` (a HyenaModel) for ``inputs``, by the blocks in reused
    buffers (see the module docstring), filling the layer states of ``cache`` (a prefill's empty HyenaCache, or None)
    as the module path does; a caller's embeddings are left intact (the model's own are the first residual)."""
    residual = inputs.embeds if inputs.embeds_owned else inputs.embeds.clone()
    normed = torch.empty_like(residual)
    buffers: dict = {}
    for i, block in enumerate(model.layers):
        state = None if cache is None else cache.layers[i]
        _add_mixer(block, _layer_norm_into(block.norm1, residual, normed), inputs, buffers, state, residual)
        mlp_in_row_blocks(block.mlp, residual, norm=block.norm2, add_to_input=True)
    return _layer_norm_into(model.norm_f, residual, normed)  # the last normalised input is no longer needed
