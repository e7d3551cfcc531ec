"""Hyena / HyenaDNA / H3 language models for transformers (pure-PyTorch path; long convolutions via hyena_hf.ops)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)

from .configuration_hyena import HyenaConfig
from .ops import long_conv


def _padding_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, L) 0/1 mask -> (B, 1, L) multiplier, or None when nothing is padded."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask[:, None, :].to(dtype)


def _check_length(config: HyenaConfig, seqlen: int) -> None:
    if config.has_length_limit and seqlen > config.max_position_embeddings:
        raise ValueError(
            f"Input length {seqlen} exceeds max_position_embeddings={config.max_position_embeddings} (the length of "
            "the implicit Hyena filters). Truncate the input, or load the model with a larger "
            "max_position_embeddings (the filters are then evaluated at new positions and the model must be fine-tuned)."
        )


# ----------------------------------------------------------------------------------------------------------------------
# Implicit (Hyena) filter
# ----------------------------------------------------------------------------------------------------------------------
def hyena_positional_embedding(seq_len: int, emb_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hyena's filter input: normalised time t in [0, 1] plus (emb_dim-1)/2 complex-exponential bands (Re, Im)."""
    t = torch.linspace(0, 1, seq_len)[None, :, None]
    bands = (emb_dim - 1) // 2
    t_rescaled = torch.linspace(0, seq_len - 1, seq_len)[None, :, None]
    w = 2 * math.pi * t_rescaled / seq_len
    f = torch.linspace(1e-4, bands - 1, bands)[None, None]
    z = torch.exp(-1j * f * w)
    return torch.cat([t, z.real, z.imag], dim=-1), t


class HyenaImplicitFilter(nn.Module):
    """h[t] = modulation(t) * MLP_sin(z[t]); one MLP produces the filters of every order step (channels interleaved)."""

    def __init__(self, config: HyenaConfig, channels: int):
        super().__init__()
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

    def forward(self, seqlen: int) -> torch.Tensor:
        """(1, seqlen, channels) filter values, in at least float32."""
        dtype = torch.promote_types(self.out.weight.dtype, torch.float32)
        z = self.z[:, :seqlen].to(dtype)
        freq = self.sin_freq.to(dtype)
        h = z
        for linear in self.mlp:
            h = torch.sin(freq * F.linear(h, linear.weight.to(dtype), linear.bias.to(dtype)))
        h = F.linear(h, self.out.weight.to(dtype))
        if self.config.modulate:
            decay = torch.exp(-self.t[:, :seqlen].to(dtype) * self.deltas.to(dtype).abs())
            h = h * (decay + self.config.modulation_shift)
        return h


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
        width = (order + 1) * d
        self.short_filter = nn.Conv1d(width, width, config.short_filter_order, groups=width,
                                      padding=config.short_filter_order - 1)
        self.filter = HyenaImplicitFilter(config, d * (order - 1))
        self.dropout = nn.Dropout(config.hyena_dropout)

    def long_filters(self, seqlen: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Filters (order-1, d, L) and skips (order-1, d); the MLP's channels are laid out as (d, order-1)."""
        d, n = self.config.hidden_size, self.config.hyena_order - 1
        h = self.filter(seqlen)[0]  # (L, d*n)
        h = h.view(seqlen, d, n).permute(2, 1, 0)
        return h, self.filter.D.view(d, n).t()

    def forward(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        seqlen = hidden_states.shape[1]
        u = self.in_proj(hidden_states).transpose(1, 2)  # (B, (order+1) d, L)
        if padding_mask is not None:
            u = u * padding_mask
        uc = self.short_filter(u)[..., :seqlen]
        *xs, v = uc.split(self.config.hidden_size, dim=1)
        h, skip = self.long_filters(seqlen)
        gates = list(reversed(xs[1:]))
        for o, x_i in enumerate(gates):
            pre_gate = x_i if padding_mask is None else x_i * padding_mask
            post_gate = xs[0] if o == len(gates) - 1 else None
            if self.training and self.dropout.p > 0:
                v = self.dropout(v * pre_gate)
                pre_gate = None
            v = long_conv(v, h[o], skip[o] if self.config.filter_use_bias else None, pre_gate, post_gate,
                          impl=self.config.long_conv_impl)
        return self.out_proj(v.transpose(1, 2))


# ----------------------------------------------------------------------------------------------------------------------
# H3
# ----------------------------------------------------------------------------------------------------------------------
class H3Mixer(nn.Module):
    """H3: q, k, v projections; k through a shift SSM (FIR) with skip; k*v through a diagonal S4D SSM; gate by q."""

    def __init__(self, config: HyenaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        d, n = config.hidden_size, config.ssm_state_size
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
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
        n = self.config.ssm_state_size
        dtype = torch.promote_types(self.shift_B.dtype, torch.float32)
        B_f = torch.fft.rfft(self.shift_B.to(dtype), n=2 * n)
        C_f = torch.fft.rfft(self.shift_C.to(dtype), n=2 * n)
        k = torch.fft.irfft(B_f.conj() * C_f, n=2 * n)[..., : min(n, seqlen)]
        return F.pad(k, (0, seqlen - k.shape[-1]))

    def diag_ssm_discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Bilinear discretisation: (dA, dC') with K[l] = 2 Re sum_n dC'_n dA_n^l."""
        dtype = torch.promote_types(self.ssm_log_dt.dtype, torch.float32)
        dt = torch.exp(self.ssm_log_dt.to(dtype)).unsqueeze(-1)
        A = -torch.exp(self.ssm_inv_A_real.to(dtype)) + 1j * self.ssm_A_imag.to(dtype)
        B = torch.view_as_complex(self.ssm_B.to(dtype).contiguous())
        C = torch.view_as_complex(self.ssm_C.to(dtype).contiguous())
        dtA = A * dt
        dC = B * C * (1.0 - dtA / 2).reciprocal() * dt
        dA = (1.0 + dtA / 2) / (1.0 - dtA / 2)
        return dA, dC

    def ssm_kernel(self, seqlen: int) -> torch.Tensor:
        dA, dC = self.diag_ssm_discrete()
        pos = torch.arange(seqlen, device=dA.device, dtype=dA.real.dtype)
        vandermonde = torch.exp(dA.log().unsqueeze(-1) * pos)  # (d, n/2, L)
        return 2 * torch.einsum("dn,dnl->dl", dC, vandermonde).real

    def forward(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        seqlen = hidden_states.shape[1]
        q = self.q_proj(hidden_states).transpose(1, 2)
        k = self.k_proj(hidden_states).transpose(1, 2)
        v = self.v_proj(hidden_states).transpose(1, 2)
        impl = self.config.long_conv_impl
        kv = long_conv(k, self.shift_kernel(seqlen), self.shift_D, padding_mask, v, impl=impl)
        y = long_conv(kv, self.ssm_kernel(seqlen), self.D, padding_mask, q, impl=impl)
        return self.out_proj(y.transpose(1, 2))


# ----------------------------------------------------------------------------------------------------------------------
# Attention (hybrid layers)
# ----------------------------------------------------------------------------------------------------------------------
def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class HyenaAttention(nn.Module):
    """Causal multi-head attention with a fused qkv projection and optional (non-interleaved) rotary embedding."""

    def __init__(self, config: HyenaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj.is_residual_projection = True
        self.rotary_dim = config.rotary_emb_dim
        if self.rotary_dim:
            self.register_buffer("inv_freq", self.rotary_inv_freq(config), persistent=False)

    @staticmethod
    def rotary_inv_freq(config: HyenaConfig) -> torch.Tensor:
        dim = config.rotary_emb_dim
        return 1.0 / (config.rotary_emb_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))

    def _apply_rotary(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        freqs = position_ids[:, None, :, None].to(self.inv_freq.dtype) * self.inv_freq  # (B, 1, L, r/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        rot, rest = x[..., : self.rotary_dim], x[..., self.rotary_dim:]
        return torch.cat((rot * cos + _rotate_half(rot) * sin, rest), dim=-1)

    def forward(self, hidden_states: torch.Tensor, attn_bias: torch.Tensor | None,
                position_ids: torch.Tensor) -> torch.Tensor:
        bsz, seqlen, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(bsz, seqlen, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        if self.rotary_dim:
            q, k = self._apply_rotary(q, position_ids), self._apply_rotary(k, position_ids)
        dropout = self.config.attention_dropout if self.training else 0.0
        if attn_bias is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias.to(q.dtype), dropout_p=dropout)
        return self.out_proj(out.transpose(1, 2).reshape(bsz, seqlen, -1))


def _attention_bias(attention_mask: torch.Tensor | None, seqlen: int, device) -> torch.Tensor | None:
    """Additive (B, 1, L, L) causal+padding mask; fully padded rows attend to themselves so no NaN appears."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    causal = torch.ones(seqlen, seqlen, dtype=torch.bool, device=device).tril()
    allowed = causal[None] & attention_mask[:, None, :].bool()
    allowed = allowed | torch.eye(seqlen, dtype=torch.bool, device=device)[None]
    bias = torch.zeros(allowed.shape, dtype=torch.float32, device=device)
    return bias.masked_fill(~allowed, float("-inf"))[:, None]


# ----------------------------------------------------------------------------------------------------------------------
# Blocks and models
# ----------------------------------------------------------------------------------------------------------------------
class HyenaMLP(nn.Module):
    def __init__(self, config: HyenaConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.fc2.is_residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


MIXER_CLASSES = {"implicit": HyenaOperator, "h3": H3Mixer, "attention": HyenaAttention}


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

    def _add_norm(self, hidden_states, residual, dropout, norm):
        dropped = dropout(hidden_states)
        residual = dropped + residual if residual is not None else dropped
        hidden_states = norm(residual.to(dtype=norm.weight.dtype))
        if self.config.residual_in_fp32:  # "at least fp32": a float64 model keeps a float64 residual
            residual = residual.to(torch.promote_types(residual.dtype, torch.float32))
        return hidden_states, residual

    def forward(self, hidden_states, residual=None, padding_mask=None, attn_bias=None, position_ids=None):
        hidden_states, residual = self._add_norm(hidden_states, residual, self.dropout1, self.norm1)
        if self.mixer_type == "attention":
            hidden_states = self.mixer(hidden_states, attn_bias, position_ids)
        else:
            hidden_states = self.mixer(hidden_states, padding_mask)
        hidden_states, residual = self._add_norm(hidden_states, residual, self.dropout2, self.norm2)
        return self.mlp(hidden_states), residual


class HyenaPreTrainedModel(PreTrainedModel):
    config_class = HyenaConfig
    config: HyenaConfig
    base_model_prefix = "backbone"
    _no_split_modules = ["HyenaBlock"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original init (safari/H3 `_init_weights` + module constructors), GPT-2 rescaled residual projections."""
        cfg = self.config
        std = cfg.initializer_range
        if isinstance(module, nn.Linear):
            if cfg.rescale_prenorm_residual and getattr(module, "is_residual_projection", False):
                # GPT-2 scheme of the original: residual-branch outputs scaled by 1/sqrt(2 n_layer)
                init.normal_(module.weight, std=std / math.sqrt(2 * cfg.num_hidden_layers))
            else:
                init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d):  # PyTorch's default Conv1d init, as in the original
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(module.weight.shape[1] * module.weight.shape[2])
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, HyenaImplicitFilter):
            z, t = hyena_positional_embedding(cfg.max_position_embeddings, cfg.filter_emb_dim)
            init.copy_(module.z, z)
            init.copy_(module.t, t)
            init.constant_(module.sin_freq, float(cfg.filter_sin_freq))
            max_decay = math.log(cfg.modulation_target) / cfg.modulation_fast_decay_pct
            min_decay = math.log(cfg.modulation_target) / cfg.modulation_slow_decay_pct
            init.copy_(module.deltas, torch.linspace(min_decay, max_decay, module.channels)[None, None])
            init.normal_(module.D, std=1.0)
        elif isinstance(module, H3Mixer):
            self._init_h3(module)
        elif isinstance(module, HyenaAttention) and module.rotary_dim:
            init.copy_(module.inv_freq, module.rotary_inv_freq(cfg))

    def _init_h3(self, module: H3Mixer) -> None:
        """S4D-Lin init: A = -1/2 + i pi n, dt log-uniform in [1e-3, 1e-1], B = 1, C ~ N(0, 1/2) complex; shift B = e_1."""
        d, half = module.ssm_inv_A_real.shape
        init.constant_(module.ssm_inv_A_real, math.log(0.5))
        init.copy_(module.ssm_A_imag, math.pi * torch.arange(half).float().expand(d, half))
        log_dt = torch.rand(d) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
        init.copy_(module.ssm_log_dt, log_dt)
        init.copy_(module.ssm_B, torch.stack([torch.ones(d, half), torch.zeros(d, half)], dim=-1))
        init.normal_(module.ssm_C, std=0.5 ** 0.5)
        shift_B = torch.zeros_like(module.shift_B)
        shift_B[:, 0] = 1.0
        init.copy_(module.shift_B, shift_B)
        init.normal_(module.shift_C, std=1.0)
        init.normal_(module.shift_D, std=1.0)
        init.normal_(module.D, std=1.0)


class HyenaModel(HyenaPreTrainedModel):
    def __init__(self, config: HyenaConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.padded_vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(HyenaBlock(config, i) for i in range(config.num_hidden_layers))
        self.drop_f = nn.Dropout(config.resid_pdrop)
        self.norm_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | BaseModelOutputWithPast:
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}")
            inputs_embeds = self.embeddings(input_ids)
        bsz, seqlen = inputs_embeds.shape[:2]
        _check_length(self.config, seqlen)
        if attention_mask is not None and attention_mask.shape != (bsz, seqlen):
            raise ValueError(f"attention_mask must have shape {(bsz, seqlen)}, got {tuple(attention_mask.shape)}")
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            else:
                position_ids = torch.arange(seqlen, device=inputs_embeds.device)[None].expand(bsz, -1)

        padding_mask = _padding_mask(attention_mask, inputs_embeds.dtype)
        attn_bias = None
        if self.config.attn_layer_idx:
            attn_bias = _attention_bias(attention_mask, seqlen, inputs_embeds.device)

        hidden_states, residual = inputs_embeds, None
        all_hidden_states = () if output_hidden_states else None
        for block in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states if residual is None else residual,)
            hidden_states, residual = block(hidden_states, residual, padding_mask, attn_bias, position_ids)
        residual = self.drop_f(hidden_states) + residual
        hidden_states = self.norm_f(residual.to(dtype=self.norm_f.weight.dtype))
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        if not return_dict:
            return tuple(v for v in (hidden_states, all_hidden_states) if v is not None)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, hidden_states=all_hidden_states)


class HyenaForCausalLM(HyenaPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: HyenaConfig):
        super().__init__(config)
        self.backbone = HyenaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # Decoding recomputes the full forward; the recurrent cache comes with hyena_hf's own cache classes.
        return False

    def get_input_embeddings(self):
        return self.backbone.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.backbone.embeddings = new_embeddings

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, inputs_embeds=None, **kwargs):
        # Without a cache every step sees the whole sequence (prompt + generated tokens).
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_logits_to_keep: int | None = None,
        **kwargs,
    ) -> tuple | CausalLMOutputWithPast:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.backbone(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                position_ids=position_ids, output_hidden_states=output_hidden_states, return_dict=True)
        hidden_states = outputs.last_hidden_state
        if num_logits_to_keep is not None:
            logits_to_keep = num_logits_to_keep
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        hidden_states = hidden_states[:, keep]
        # Only the real vocabulary: the padded rows of the tied embedding are never predicted.
        weight = self.lm_head.weight[: self.config.vocab_size]
        logits = F.linear(hidden_states.to(weight.dtype), weight)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        if not return_dict:
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class HyenaForSequenceClassification(HyenaPreTrainedModel):
    def __init__(self, config: HyenaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.backbone = HyenaModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.backbone.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.backbone.embeddings = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | SequenceClassifierOutputWithPast:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.backbone(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.score(outputs.last_hidden_state)
        bsz, seqlen = logits.shape[:2]
        # Pool the last real token: from the attention mask when given, else from pad_token_id (left or right padding).
        if attention_mask is not None:
            real = attention_mask.to(logits.device).bool()
        elif input_ids is not None and self.config.pad_token_id is not None:
            real = input_ids.to(logits.device) != self.config.pad_token_id
        elif bsz == 1 or input_ids is None:
            real = torch.ones(bsz, seqlen, dtype=torch.bool, device=logits.device)
        else:
            raise ValueError("Cannot pool a batch of more than one sequence without attention_mask or pad_token_id")
        positions = torch.arange(seqlen, device=logits.device)
        last = torch.where(real, positions, -1).max(-1).values.clamp(min=0)
        pooled_logits = logits[torch.arange(bsz, device=logits.device), last]
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, pooled_logits=pooled_logits, config=self.config)
        if not return_dict:
            output = (pooled_logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return SequenceClassifierOutputWithPast(loss=loss, logits=pooled_logits, hidden_states=outputs.hidden_states)


__all__ = [
    "HyenaPreTrainedModel",
    "HyenaModel",
    "HyenaForCausalLM",
    "HyenaForSequenceClassification",
]
