"""Hyena / HyenaDNA / H3 language models for transformers.

Top to bottom as in the papers: the implicit filter (Hyena), the modal filter (its distilled, recurrent form), the
Hyena operator, the H3 mixer, attention for hybrid models, the MLP, the block, and the models. Execution engines
(long convolution, CPU inference, recurrent decoding) live in :mod:`hyena_hf.ops`, :mod:`hyena_hf.ops_cpu` and
:mod:`hyena_hf.decoding`; each mixer picks one at a single point of its ``forward``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.utils import can_return_tuple

from . import model_inputs, ops_cpu, precision  # input checks, CPU engines (module attributes: tests wrap them)
from .attention_functions import apply_rotary, attention_function, rotary_inv_freq
from .cache_hyena import H3State, HyenaCache, HyenaConvState, filled_by_forward
from .configuration_hyena import HyenaConfig
from .cpu_backbone import backbone_forward, backbone_serves
from .decoding import h3_prefill, h3_step, hyena_prefill_step, hyena_step, hyena_step_parameters, prefill_recorder
from .diagonal_recurrence import bilinear_discretisation, modal_impulse_response, shift_ssm_kernel
from .generation_hooks import HyenaGenerationMixin
from .initialization import init_h3, init_implicit_filter, init_modal_filter, init_rotary, init_standard_module
from .losses import causal_lm_loss, sequence_classification_loss
from .model_inputs import ModelInputs
from .ops import long_conv
from .ops_cpu import causal_short_conv, linear_channels_first, project_filter_rows, scale_by_decay, sine_of_linear
from .precision import KeepsFloat32, float32_default_dtype, no_autocast
from .pretrained_io import HyenaCheckpointMixin


# --- Implicit (Hyena) filter ------------------------------------------------------------------------------------------
def hyena_positional_embedding(seq_len: int, emb_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hyena's filter input: normalised time t in [0, 1] plus (emb_dim-1)/2 complex-exponential bands (Re, Im);
    float32 whatever the default dtype (its high bands are meaningless in half precision)."""
    dtype = torch.promote_types(torch.get_default_dtype(), torch.float32)
    t = torch.linspace(0, 1, seq_len, dtype=dtype)[None, :, None]
    bands = (emb_dim - 1) // 2
    t_rescaled = torch.linspace(0, seq_len - 1, seq_len, dtype=dtype)[None, :, None]
    w = 2 * math.pi * t_rescaled / seq_len
    f = torch.linspace(1e-4, bands - 1, bands, dtype=dtype)[None, None]
    z = torch.exp(-1j * f * w)
    return torch.cat([t, z.real, z.imag], dim=-1), t


class HyenaImplicitFilter(KeepsFloat32):
    """h[t] = modulation(t) * MLP_sin(z[t]); one MLP produces the filters of every order step (channels interleaved).
    Its parameters and buffers stay in float32 in a half-precision model (see :mod:`hyena_hf.precision`)."""

    def __init__(self, config: HyenaConfig, channels: int):
        super().__init__()
        with float32_default_dtype():
            self._build(config, channels)

    def _build(self, config: HyenaConfig, channels: int) -> None:
        self.config = config
        self.channels = channels
        z, t = hyena_positional_embedding(config.max_position_embeddings, config.filter_emb_dim)
        if config.train_pos_emb:
            self.z = nn.Parameter(z)
        else:
            self.register_buffer("z", z)
        self.register_buffer("t", t)
        width = config.filter_order
        dims = [config.filter_emb_dim] + [width] * (config.filter_num_inner_mlps + 1)
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(width, channels, bias=False)
        # One frequency vector shared by all Sin activations, as in the original.
        self.sin_freq = nn.Parameter(torch.full((1, width), float(config.filter_sin_freq)))
        max_decay = math.log(config.modulation_target) / config.modulation_fast_decay_pct
        min_decay = math.log(config.modulation_target) / config.modulation_slow_decay_pct
        self.register_buffer("deltas", torch.linspace(min_decay, max_decay, channels)[None, None])
        self.D = nn.Parameter(torch.randn(channels))

    def forward(self, seqlen: int, return_skip: bool = False):
        """(channels, seqlen) filter values, in at least float32 (and the skip ``D`` with ``return_skip``: read
        inside forward so accelerate's offload hooks have loaded it). Channels first, the layout of the FFT."""
        h = self.filters_for(self.features(seqlen), slice(None))
        return (h, self.D) if return_skip else h

    def features(self, seqlen: int) -> torch.Tensor:
        """The sine MLP's output (1, seqlen, width), shared by every channel."""
        dtype = torch.promote_types(self.out.weight.dtype, torch.float32)
        freq = self.sin_freq.to(dtype)
        h = self.z[:, :seqlen].to(dtype)
        for linear in self.mlp:
            h = sine_of_linear(linear, h, freq, dtype)  # sin(freq * linear(h))
        return h

    def filters_for(self, features: torch.Tensor, rows: slice, out: torch.Tensor | None = None) -> torch.Tensor:
        """Filters of the channels ``rows`` only, (rows, seqlen), from :meth:`features` (into ``out`` when given):
        the output projection, then the decay modulation."""
        return self._modulate(project_filter_rows(self.out, features, rows, out), rows)

    def _modulate(self, h: torch.Tensor, rows: slice) -> torch.Tensor:
        if not self.config.modulate:
            return h
        t = self.t[0, : h.shape[-1], 0].to(h.dtype)
        rate = self.deltas[0, 0, rows].to(h.dtype).abs()
        return scale_by_decay(h, rate, t, self.config.modulation_shift)  # h * (exp(-rate t) + shift)


# --- Modal filter: h[t] = Re sum_n R_n p_n^t (the Laughing Hyena / StripedHyena form, see hyena_hf.distillation) ------
class ModalFilter(KeepsFloat32):
    """``channels`` filters of ``modal_state_size`` complex modes each, evaluated for any length (no
    ``max_position_embeddings`` limit) and decoded by a complex state per channel. Poles/residues are stored as real
    views, kept in float32 in a half-precision model (see :mod:`hyena_hf.precision`)."""

    def __init__(self, config, channels: int):
        super().__init__()
        self.config = config
        self.channels = channels
        n = config.modal_state_size
        dtype = torch.promote_types(torch.get_default_dtype(), torch.float32)
        self.poles = nn.Parameter(torch.zeros(channels, n, 2, dtype=dtype))
        self.residues = nn.Parameter(torch.zeros(channels, n, 2, dtype=dtype))
        self.D = nn.Parameter(torch.zeros(channels, dtype=dtype))

    def complex_poles_residues(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Poles and residues as complex ``(channels, modal_state_size)`` tensors, in at least float32."""
        dtype = torch.promote_types(self.poles.dtype, torch.float32)
        return tuple(torch.view_as_complex(p.to(dtype).contiguous()) for p in (self.poles, self.residues))

    def forward(self, seqlen: int, return_skip: bool = False):
        """(channels, seqlen), same layout as the implicit filter (and the skip ``D`` with ``return_skip``)."""
        h = self.filters_for(seqlen, slice(None))
        return (h, self.D) if return_skip else h

    def features(self, seqlen: int) -> int:
        """What :meth:`filters_for` needs: the length (the modes are per channel)."""
        return seqlen

    def filters_for(self, seqlen: int, rows: slice, out: torch.Tensor | None = None) -> torch.Tensor:
        """Filters of the channels ``rows`` only, (rows, seqlen) (into ``out`` when given)."""
        poles, residues = self.complex_poles_residues()
        h = modal_impulse_response(poles[rows], residues[rows], seqlen)
        return h if out is None else out.copy_(h)


# --- Hyena operator ---------------------------------------------------------------------------------------------------
class HyenaOperator(nn.Module):
    """Hyena mixer: in_proj -> short causal conv -> (gate, long conv) x (order-1) -> gate -> out_proj."""

    def __init__(self, config: HyenaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        d, order = config.hidden_size, config.hyena_order
        self.in_proj = nn.Linear(d, (order + 1) * d)
        self.out_proj = nn.Linear(d, d)
        self.out_proj.is_residual_projection = True
        width, taps = (order + 1) * d, config.short_filter_order
        self.short_filter = nn.Conv1d(width, width, taps, groups=width, padding=taps - 1)  # depthwise, causal
        filter_class = ModalFilter if config.filter_type == "modal" else HyenaImplicitFilter
        self.filter = filter_class(config, d * (order - 1))
        self.dropout = nn.Dropout(config.hyena_dropout)

    def long_filters(self, seqlen: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Filters (order-1, d, L) and skips (order-1, d), None when the skip is off; the filter's channels are laid
        out as (d, order-1)."""
        d, n = self.config.hidden_size, self.config.hyena_order - 1
        with no_autocast():
            h, skip = self.filter(seqlen, return_skip=True)
        h = h.view(d, n, seqlen).transpose(0, 1)  # (d*n, L) -> (n, d, L)
        return h, skip.view(d, n).t() if self.config.filter_use_bias else None

    def forward(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None, state: HyenaConvState | None = None
    ) -> torch.Tensor:
        """``hidden_states (B, L, d)`` -> ``(B, L, d)``. ``padding_mask``: ``(B, 1, L)`` multiplier or None;
        ``state``: the layer's decoding state (filled by a prefill, advanced by decoding steps) or None."""
        # The engine: recurrent decoding after a prefill, CPU inference in channel blocks, or the steps below.
        if state is not None and state.step_params is not None:
            return hyena_step(self, hidden_states, state, padding_mask)
        gated = ops_cpu.hyena_mixer_inference(self, hidden_states, padding_mask, prefill_recorder(self, state))
        if gated is not None:
            return self.out_proj(gated.mT)
        seqlen = hidden_states.shape[1]
        # 1. in projection, channels first: (B, (order+1) d, L)
        u = linear_channels_first(self.in_proj, hidden_states)
        if padding_mask is not None:
            u = u * padding_mask
        if state is not None and self.config.short_filter_order > 1:  # prefill: keep the short filter's window
            state.update_conv_state(u, conv_kernel_size=self.config.short_filter_order - 1)
        # 2. short causal filter, split into the gates x_1 .. x_{order-1}, the output gate x_0 and the value v
        *xs, v = causal_short_conv(self.short_filter, u).split(self.config.hidden_size, dim=1)
        # 3. order-1 gated long convolutions: v <- x_i * (h_i * v), the last one gated by x_0 as well
        h, skip = self.long_filters(seqlen)
        if state is not None:
            state.step_params = hyena_step_parameters(self, None, skip, state)
        gates = list(reversed(xs[1:]))
        for o, x_i in enumerate(gates):
            pre_gate = x_i if padding_mask is None else x_i * padding_mask
            post_gate = xs[0] if o == len(gates) - 1 else None
            if (self.training and self.dropout.p > 0) or state is not None:
                v = self.dropout(v * pre_gate)  # the original's dropout sits between gate and convolution
                pre_gate = None
                if state is not None:
                    hyena_prefill_step(state, o, v)
            skip_o = None if skip is None else skip[o]
            v = long_conv(v, h[o, :, :seqlen], skip_o, pre_gate, post_gate, impl=self.config.long_conv_impl)
        # 4. out projection
        return self.out_proj(v.transpose(1, 2))


# --- H3 ---------------------------------------------------------------------------------------------------------------
class H3Mixer(KeepsFloat32):
    """H3: q, k, v projections; k through a shift SSM (FIR) with skip; k*v through a diagonal S4D SSM; gate by q.
    The SSM parameters stay in float32 in a half-precision model; the projections take the model's dtype."""

    float32_children = False

    def __init__(self, config: HyenaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        d, n = config.hidden_size, config.ssm_state_size
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        with float32_default_dtype():
            self._build_ssm(d, n)

    def _build_ssm(self, d: int, n: int) -> None:
        # Shift SSM: kernel = correlation of B and C (an FIR filter of length n).
        self.shift_B = nn.Parameter(torch.zeros(d, n))
        self.shift_C = nn.Parameter(torch.randn(d, n))
        self.shift_D = nn.Parameter(torch.randn(d))
        # Diagonal SSM (S4D-Lin), n // 2 complex modes, complex tensors stored as (..., 2) real views.
        half = n // 2
        self.ssm_log_dt = nn.Parameter(torch.zeros(d))
        self.ssm_inv_A_real = nn.Parameter(torch.zeros(d, half))
        self.ssm_A_imag = nn.Parameter(torch.zeros(d, half))
        self.ssm_B = nn.Parameter(torch.zeros(d, half, 2))
        self.ssm_C = nn.Parameter(torch.zeros(d, half, 2))
        self.D = nn.Parameter(torch.randn(d))

    def shift_kernel(self, seqlen: int) -> torch.Tensor:
        """The shift SSM as an FIR filter ``(d, min(d_state, seqlen))`` (zero beyond), in at least float32."""
        dtype = torch.promote_types(self.shift_B.dtype, torch.float32)
        return shift_ssm_kernel(self.shift_B.to(dtype), self.shift_C.to(dtype), seqlen)

    def diag_ssm_discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Bilinear discretisation: (dA, dC') with K[l] = 2 Re sum_n dC'_n dA_n^l, each ``(d, d_state / 2)``."""
        dtype = torch.promote_types(self.ssm_log_dt.dtype, torch.float32)
        A = -torch.exp(self.ssm_inv_A_real.to(dtype)) + 1j * self.ssm_A_imag.to(dtype)
        B, C = (torch.view_as_complex(p.to(dtype).contiguous()) for p in (self.ssm_B, self.ssm_C))
        return bilinear_discretisation(torch.exp(self.ssm_log_dt.to(dtype)).unsqueeze(-1), A, B, C)

    def ssm_kernel(self, seqlen: int) -> torch.Tensor:
        """The diagonal SSM's convolution kernel ``(d, seqlen)``: ``K[l] = 2 Re sum_n dC'_n dA_n^l``."""
        dA, dC = self.diag_ssm_discrete()
        return modal_impulse_response(dA, 2 * dC, seqlen)  # the 2 on the (d, N) residues, not the (d, L) result

    def forward(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None, state: H3State | None = None
    ) -> torch.Tensor:
        """``hidden_states (B, L, d)`` -> ``(B, L, d)``; ``padding_mask`` ``(B, 1, L)`` or None; ``state`` as for
        :meth:`HyenaOperator.forward`."""
        if state is not None and state.step_params is not None:  # the engine: recurrent decoding after a prefill
            return h3_step(self, hidden_states, state, padding_mask)
        seqlen = hidden_states.shape[1]
        # 1. q, k, v projections, channels first (B, d, L)
        q = linear_channels_first(self.q_proj, hidden_states)
        k = linear_channels_first(self.k_proj, hidden_states)
        v = linear_channels_first(self.v_proj, hidden_states)
        impl = self.config.long_conv_impl
        with no_autocast():
            shift_kernel, ssm_kernel = self.shift_kernel(seqlen), self.ssm_kernel(seqlen)
        # 2. shift SSM on k, gated by v; 3. diagonal SSM on k*v, gated by q
        kv = long_conv(k, shift_kernel, self.shift_D, padding_mask, v, impl=impl)
        y = long_conv(kv, ssm_kernel, self.D, padding_mask, q, impl=impl)
        if state is not None:
            h3_prefill(self, k, kv, padding_mask, state)
        # 4. out projection
        return self.out_proj(y.transpose(1, 2))


# --- Attention (hybrid layers) ----------------------------------------------------------------------------------------
class HyenaAttention(KeepsFloat32):
    """Causal multi-head attention with a fused qkv projection and optional (non-interleaved) rotary embedding. The
    rotary frequencies stay in float32 in a half-precision model (positions beyond 256 are not integers in bf16)."""

    float32_children = False

    def __init__(self, config: HyenaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj.is_residual_projection = True
        self.is_causal = True  # read by transformers' attention functions
        self.rotary_dim = config.rotary_emb_dim
        if self.rotary_dim:
            self.register_buffer("inv_freq", rotary_inv_freq(config), persistent=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        layer_cache: DynamicLayer | None = None,
        output_attentions: bool = False,
    ):
        """``hidden_states (B, L, d)`` -> ``(B, L, d)`` and the attention weights ``(B, heads, L, T)`` (None unless
        ``output_attentions``). ``attention_mask`` is in the format of ``config._attn_implementation`` (see
        :func:`~hyena_hf.model_inputs.attention_mask_for`). The kernel comes from transformers' attention interface."""
        bsz, seqlen, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(bsz, seqlen, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        if self.rotary_dim:
            q = apply_rotary(q, position_ids, self.inv_freq, self.rotary_dim)
            k = apply_rotary(k, position_ids, self.inv_freq, self.rotary_dim)
        if layer_cache is not None:
            k, v = layer_cache.update(k, v)
        attention = attention_function(self.config._attn_implementation, output_attentions)
        dropout = self.config.attention_dropout if self.training else 0.0
        out, weights = attention(self, q, k, v, attention_mask, dropout=dropout, scaling=self.head_dim**-0.5)
        return self.out_proj(out.reshape(bsz, seqlen, -1)), weights


# --- Blocks and models ------------------------------------------------------------------------------------------------
class HyenaMLP(nn.Module):
    def __init__(self, config: HyenaConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.fc2.is_residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fc1 -> tanh-GELU -> fc2 on ``x (..., d)``; CPU inference takes the row-blocked engine of ops_cpu."""
        out = ops_cpu.mlp_inference(self, x)
        return out if out is not None else self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


MIXER_CLASSES = {"implicit": HyenaOperator, "modal": HyenaOperator, "h3": H3Mixer, "attention": HyenaAttention}


class HyenaBlock(GradientCheckpointingLayer):
    """Pre-norm block with a separate residual stream (dropout -> add -> LN -> mixer, dropout -> add -> LN -> MLP)."""

    def __init__(self, config: HyenaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.mixer_type = config.mixer_types[layer_idx]
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mixer = MIXER_CLASSES[self.mixer_type](config, layer_idx)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = HyenaMLP(config)
        self.dropout1 = nn.Dropout(config.embd_pdrop if layer_idx == 0 else config.resid_pdrop)
        self.dropout2 = nn.Dropout(config.resid_pdrop)

    def _add_norm(self, hidden_states, residual, dropout, norm, inputs):
        residual = ops_cpu.residual_add(dropout(hidden_states), residual, inputs.branches_unobserved)
        hidden_states = norm(residual.to(dtype=norm.weight.dtype))
        if self.config.residual_in_fp32:  # "at least fp32": a float64 model keeps a float64 residual
            residual = residual.to(torch.promote_types(residual.dtype, torch.float32))
        return hidden_states, residual

    def forward(self, hidden_states, residual, inputs: ModelInputs, layer_cache=None, output_attentions=False):
        """``hidden_states`` and ``residual`` ``(B, L, d)`` (residual None for the first block) -> the block's output,
        the residual stream and the attention weights (None but for attention layers asked for them). ``inputs``:
        the masks and positions every block shares (:class:`~hyena_hf.model_inputs.ModelInputs`)."""
        hidden_states, residual = self._add_norm(hidden_states, residual, self.dropout1, self.norm1, inputs)
        weights = None
        if self.mixer_type == "attention":
            hidden_states, weights = self.mixer(
                hidden_states, inputs.attention, inputs.positions, layer_cache, output_attentions
            )
        else:
            hidden_states = self.mixer(hidden_states, inputs.padding, layer_cache)
        hidden_states, residual = self._add_norm(hidden_states, residual, self.dropout2, self.norm2, inputs)
        return self.mlp(hidden_states), residual, weights


class HyenaPreTrainedModel(HyenaCheckpointMixin, PreTrainedModel):
    """The original initialisation, checkpoint I/O and transformers settings shared by every Hyena model."""

    _is_stateful = True
    config_class = HyenaConfig
    config: HyenaConfig
    base_model_prefix = "backbone"
    _input_embed_layer = "embeddings"  # transformers' embedding accessors find it (through the backbone for heads)
    _no_split_modules = ["HyenaBlock"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    # Tensors that define long filters load in float32 whatever dtype is asked for (see hyena_hf.precision); each
    # model lists the patterns of its own mixers (post_init).
    _keep_in_fp32_modules_strict = precision.FLOAT32_PARAMETER_PATTERNS

    def post_init(self) -> None:
        self._keep_in_fp32_modules_strict = precision.float32_parameter_patterns(self.config.mixer_types)
        super().post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original init (safari/H3 `_init_weights` + module constructors), see :mod:`hyena_hf.initialization`."""
        cfg = self.config
        if isinstance(module, HyenaImplicitFilter):
            z, t = hyena_positional_embedding(cfg.max_position_embeddings, cfg.filter_emb_dim)
            init_implicit_filter(module, cfg, z, t)
        elif isinstance(module, ModalFilter):
            init_modal_filter(module)
        elif isinstance(module, H3Mixer):
            init_h3(module)
        elif isinstance(module, HyenaAttention) and module.rotary_dim:
            init_rotary(module, rotary_inv_freq(cfg))
        else:
            init_standard_module(module, cfg)


class HyenaModel(HyenaPreTrainedModel):
    """The backbone: embeddings, ``num_hidden_layers`` blocks, final LayerNorm; ``(B, L)`` ids -> ``(B, L, d)``."""

    def __init__(self, config: HyenaConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(HyenaBlock(config, i) for i in range(config.num_hidden_layers))
        self.drop_f = nn.Dropout(config.resid_pdrop)
        self.norm_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: HyenaCache | DynamicCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        past_key_values (`HyenaCache` or `DynamicCache`, *optional*): decoding state from a previous call (see
            `hyena_hf.cache_hyena`); then `input_ids` holds only the new tokens and `attention_mask` covers past and
            new tokens.
        use_cache (`bool`, *optional*): return a `HyenaCache` to continue decoding from.
        """
        config = self.config
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        if use_cache is None:
            use_cache = config.use_cache and not self.training and not model_inputs.tracing()
        inputs_embeds = model_inputs.embed_inputs(self.embeddings, input_ids, inputs_embeds, config.vocab_size)
        if use_cache and past_key_values is None:
            past_key_values = HyenaCache(config)
        inputs = model_inputs.prepare_model_inputs(
            self, inputs_embeds, attention_mask, position_ids, past_key_values, output_attentions, input_ids is not None
        )
        if inputs_embeds.shape[0] == 0 or inputs_embeds.shape[1] == 0:
            return model_inputs.empty_output(
                self, inputs_embeds, past_key_values, output_hidden_states, output_attentions
            )
        engine = backbone_serves(self, inputs, past_key_values, output_hidden_states or output_attentions)
        with filled_by_forward(past_key_values, inputs.total):
            if engine:  # CPU inference in reused buffers
                return BaseModelOutputWithPast(backbone_forward(self, inputs, past_key_values), past_key_values)
            return self._blocks(inputs, past_key_values, output_hidden_states, output_attentions)

    def _blocks(
        self, inputs: ModelInputs, cache: HyenaCache | None, output_hidden_states: bool, output_attentions: bool
    ) -> BaseModelOutputWithPast:
        """The blocks one by one on ``inputs.embeds (B, L, d)``, then the final norm."""
        hidden_states, residual = inputs.embeds, None
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for i, block in enumerate(self.layers):
            if output_hidden_states:
                all_hidden_states += (hidden_states if residual is None else residual,)
            layer_cache = cache.layers[i] if cache is not None else None
            hidden_states, residual, weights = block(hidden_states, residual, inputs, layer_cache, output_attentions)
            if output_attentions and weights is not None:  # attention layers only (as in transformers' hybrids)
                all_attentions += (weights,)
        residual = ops_cpu.residual_add(self.drop_f(hidden_states), residual, inputs.branches_unobserved)
        hidden_states = self.norm_f(residual.to(dtype=self.norm_f.weight.dtype))
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return BaseModelOutputWithPast(hidden_states, cache, all_hidden_states, all_attentions)


class HyenaForCausalLM(HyenaPreTrainedModel, HyenaGenerationMixin):
    """The backbone and an LM head tied to its embedding; ``generate`` decodes through a :class:`HyenaCache`."""

    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: HyenaConfig):
        super().__init__(config)
        self.backbone = HyenaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: HyenaCache | DynamicCache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_logits_to_keep: int | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """``input_ids (B, L)`` (or ``inputs_embeds (B, L, d)``) -> logits ``(B, logits_to_keep or L, vocab_size)``;
        with ``labels (B, L)`` the next-token loss (see :mod:`hyena_hf.losses`)."""
        outputs = self.backbone(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        hidden_states = outputs.last_hidden_state
        logits_to_keep = logits_to_keep if num_logits_to_keep is None else num_logits_to_keep
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        hidden_states = hidden_states[:, keep]
        # Only the real vocabulary: the padded rows of the tied embedding are never predicted. (The head is called as
        # a module so accelerate's offload hooks work; the few padded columns are dropped afterwards.)
        logits = self.lm_head(hidden_states.to(self.lm_head.weight.dtype))[..., : self.config.vocab_size]
        loss = None
        if labels is not None:
            loss = causal_lm_loss(self.loss_function, logits, labels, self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss, logits, outputs.past_key_values, outputs.hidden_states, outputs.attentions)


class HyenaForSequenceClassification(HyenaPreTrainedModel):
    """The backbone and a linear head read at each sequence's last real token, as GPT-2's classifier is."""

    def __init__(self, config: HyenaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.backbone = HyenaModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        """``input_ids (B, L)`` -> logits ``(B, num_labels)`` of each sequence's last real token; with ``labels``
        transformers' classification or regression loss."""
        outputs = self.backbone(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        logits = self.score(outputs.last_hidden_state)
        last = model_inputs.last_real_positions(
            attention_mask, input_ids, self.config.pad_token_id, logits.shape[:2], logits.device
        )
        pooled_logits = logits[torch.arange(logits.shape[0], device=logits.device), last]
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(self.loss_function, labels, pooled_logits, self.config)
        return SequenceClassifierOutputWithPast(loss, pooled_logits, None, outputs.hidden_states, outputs.attentions)


__all__ = ["HyenaPreTrainedModel", "HyenaModel", "HyenaForCausalLM", "HyenaForSequenceClassification"]
