"""Hyena / HyenaDNA / H3 language models for transformers (pure-PyTorch path; long convolutions via hyena_hf.ops)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import DynamicLayer
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from . import ops_cpu
from .cache_hyena import H3State, HyenaCache, HyenaConvState, ModalState
from .configuration_hyena import HyenaConfig
from .ops import compute_dtype, long_conv
from .ops_cpu import causal_short_conv, inference_only, is_plain_module, linear_channels_first, short_conv_last_output
from .precision import (
    FLOAT32_PARAMETER_PATTERNS,
    KeepsFloat32,
    float32_default_dtype,
    half_precision_filter_tensors,
    no_autocast,
)
from .remote_code import write_model_code


def _tracing() -> bool:
    """Under torch.compile / torch.export: no data-dependent branches (see also ``ops.exporting``)."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _has_padding(attention_mask: torch.Tensor | None) -> bool:
    """Whether a (B, L) 0/1 mask pads anything; always assumed when traced (no data-dependent branch there)."""
    return attention_mask is not None and (_tracing() or not bool(attention_mask.all()))


def _padding_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, L) 0/1 mask -> (B, 1, L) multiplier, or None when nothing is padded (always the multiplier when traced)."""
    if not _has_padding(attention_mask):
        return None
    return attention_mask[:, None, :].to(dtype)


def _check_length(config: HyenaConfig, seqlen: int) -> None:
    if config.has_length_limit and seqlen > config.max_position_embeddings:
        raise ValueError(
            f"Input length {seqlen} exceeds max_position_embeddings={config.max_position_embeddings} (the length of "
            "the implicit Hyena filters). Truncate the input, or load the model with a larger "
            "max_position_embeddings (the filters are then evaluated at new positions and the model must be "
            "fine-tuned)."
        )


# ----------------------------------------------------------------------------------------------------------------------
# Implicit (Hyena) filter
# ----------------------------------------------------------------------------------------------------------------------
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
        features = self.features(seqlen)
        if self.out.weight.dtype == features.dtype and not is_plain_module(self.out, nn.Linear):
            h = self._modulate(self.out(features)[0].t(), slice(None))  # hooks (offload, adapters) need a module call
        else:
            h = self.filters_for(features, slice(None))
        return (h, self.D) if return_skip else h

    def features(self, seqlen: int) -> torch.Tensor:
        """The sine MLP's output (1, seqlen, width), shared by every channel."""
        dtype = torch.promote_types(self.out.weight.dtype, torch.float32)
        freq = self.sin_freq.to(dtype)
        h = self.z[:, :seqlen].to(dtype)
        for linear in self.mlp:
            h = torch.sin(freq * self._linear(linear, h, dtype))
        return h

    def filters_for(self, features: torch.Tensor, rows: slice) -> torch.Tensor:
        """Filters of the channels ``rows`` only, (rows, seqlen), from :meth:`features` (reads the output weight
        directly: plain modules only, see :meth:`forward`)."""
        h = self.out.weight[rows].to(features.dtype) @ features[0].t()
        return self._modulate(h, rows)

    def _modulate(self, h: torch.Tensor, rows: slice) -> torch.Tensor:
        if not self.config.modulate:
            return h
        t = self.t[0, : h.shape[-1], 0].to(h.dtype)
        decay = torch.outer(self.deltas[0, 0, rows].to(h.dtype).abs(), t)
        if inference_only(h):  # in place: (channels, L) tensors are large at long L
            return h.mul_(decay.neg_().exp_().add_(self.config.modulation_shift))
        return h * (torch.exp(-decay) + self.config.modulation_shift)

    @staticmethod
    def _linear(linear: nn.Linear, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if linear.weight.dtype == dtype:
            return linear(h)  # called as a module: works under accelerate's offload hooks
        # half-precision model: the filter is still computed in float32
        bias = None if linear.bias is None else linear.bias.to(dtype)
        return F.linear(h, linear.weight.to(dtype), bias)


# ----------------------------------------------------------------------------------------------------------------------
# Modal filter: h[t] = Re sum_n R_n p_n^t (the Laughing Hyena / StripedHyena form, see hyena_hf.distillation)
# ----------------------------------------------------------------------------------------------------------------------
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
        return (
            torch.view_as_complex(self.poles.to(dtype).contiguous()),
            torch.view_as_complex(self.residues.to(dtype).contiguous()),
        )

    def forward(self, seqlen: int, return_skip: bool = False):
        """(channels, seqlen), same layout as the implicit filter (and the skip ``D`` with ``return_skip``)."""
        poles, residues = self.complex_poles_residues()
        h = modal_impulse_response(poles, residues, seqlen)
        return (h, self.D) if return_skip else h

    def features(self, seqlen: int) -> int:
        """What :meth:`filters_for` needs: the length (the modes are per channel)."""
        return seqlen

    def filters_for(self, seqlen: int, rows: slice) -> torch.Tensor:
        """Filters of the channels ``rows`` only, (rows, seqlen)."""
        poles, residues = self.complex_poles_residues()
        return modal_impulse_response(poles[rows], residues[rows], seqlen)


def modal_impulse_response(poles: torch.Tensor, residues: torch.Tensor, seqlen: int) -> torch.Tensor:
    """(C, N) poles and residues -> (C, seqlen) real filters Re sum_n R_n p_n^t."""
    t = torch.arange(seqlen, device=poles.device, dtype=poles.real.dtype)
    return torch.einsum("cn,cnl->cl", residues, pole_powers(poles, t)).real


def pole_powers(poles: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """(..., N) poles, (L,) exponents -> (..., N, L) p^e, through log so gradients flow; p = 0 is nudged to 1e-30
    (log 0 = -inf would give NaN at e = 0)."""
    safe = torch.where(poles.abs() > 1e-30, poles, torch.full_like(poles, 1e-30))
    return torch.exp(torch.log(safe).unsqueeze(-1) * exponents)


def decayed_sum(u: torch.Tensor, poles: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """sum_t p^(T-1-t) u_t for ``u: (B, C, T)`` and ``poles: (C, N)`` -> ``(B, C, N)`` complex: the state a diagonal
    recurrence ``s <- p s + u`` reaches after T inputs. Chunked so memory stays O(C N chunk) at any T."""
    seqlen = u.shape[-1]
    state = u.new_zeros(u.shape[0], *poles.shape, dtype=poles.dtype)
    for start in range(0, seqlen, chunk):
        block = u[..., start : start + chunk]
        n = block.shape[-1]
        exponents = torch.arange(n - 1, -1, -1, device=u.device, dtype=poles.real.dtype)
        powers = pole_powers(poles, exponents)  # (C, N, n)
        state = state * powers[..., 0] * poles + torch.einsum("bct,cnt->bcn", block.to(poles.dtype), powers)
    return state


# ----------------------------------------------------------------------------------------------------------------------
# Hyena operator
# ----------------------------------------------------------------------------------------------------------------------
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
        self.short_filter = nn.Conv1d(
            width, width, config.short_filter_order, groups=width, padding=config.short_filter_order - 1
        )
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
        if state is not None and state.step_params is not None:  # prefilled: decode the new tokens
            return self.step(hidden_states, state, padding_mask)
        seqlen = hidden_states.shape[1]
        if state is None and ops_cpu.channel_blocks_apply(self, hidden_states):  # the CPU inference engine
            return self.out_proj(ops_cpu.hyena_mixer_in_channel_blocks(self, hidden_states, padding_mask).mT)
        u = linear_channels_first(self.in_proj, hidden_states)  # (B, (order+1) d, L)
        if padding_mask is not None:
            u = u * padding_mask
        if state is not None:  # prefill: keep the short filter's window
            k = self.config.short_filter_order - 1
            if k:
                state.update_conv_state(u, conv_kernel_size=k)  # keeps the last k inputs (zeros before the start)
        uc = causal_short_conv(self.short_filter, u)
        *xs, v = uc.split(self.config.hidden_size, dim=1)
        h, skip = self.long_filters(seqlen)
        if state is not None:
            state.step_params = self._step_parameters(h, skip, state)
        gates = list(reversed(xs[1:]))
        for o, x_i in enumerate(gates):
            pre_gate = x_i if padding_mask is None else x_i * padding_mask
            post_gate = xs[0] if o == len(gates) - 1 else None
            if (self.training and self.dropout.p > 0) or state is not None:
                v = self.dropout(v * pre_gate)
                pre_gate = None
                if state is not None:
                    self._prefill_step_state(state, o, v.to(compute_dtype(v.dtype)))
            v = long_conv(
                v,
                h[o, :, :seqlen],
                None if skip is None else skip[o],
                pre_gate,
                post_gate,
                impl=self.config.long_conv_impl,
            )
        return self.out_proj(v.transpose(1, 2))

    def _step_parameters(self, h: torch.Tensor, skip: torch.Tensor | None, state) -> tuple:
        """What decoding reads from the weights, once per prefill: the reversed filters (exact cache) or, per order
        step, the poles and residues (d, N) (modal; channels laid out as (d, order-1))."""
        if isinstance(state, ModalState):
            poles, residues = self.filter.complex_poles_residues()
            shape = (self.config.hidden_size, self.config.hyena_order - 1, -1)
            return poles.view(shape).unbind(1), residues.view(shape).unbind(1), skip
        return h.flip(-1), skip

    def _prefill_step_state(self, state, step: int, u: torch.Tensor) -> None:
        if isinstance(state, ModalState):  # s_T = sum_t p^(T-1-t) u_t, what the recurrence reaches after the prompt
            state.update_recurrent_state(decayed_sum(u, state.step_params[0][step]), state_idx=step)
        else:
            state.append(step, u)

    def step(
        self, hidden_states: torch.Tensor, state: HyenaConvState, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decoding of new tokens ``hidden_states (B, n, d)`` after a prefill: exact (the causal convolution sum over
        the stored history, O(T d) per token) or modal (the recurrence). Padded new tokens (``padding_mask (B, 1, n)``
        zero) enter as the full forward lets them: zero inputs and zero pre-gates."""
        u_all = self.in_proj(hidden_states).transpose(1, 2)
        if padding_mask is not None:
            u_all = u_all * padding_mask
        modal = isinstance(state, ModalState)
        if modal:
            poles, residues, skip = state.step_params
        else:
            needed = state.lengths[0] + u_all.shape[-1]
            if state.step_params[0].shape[-1] < needed:  # filters grow with the text (doubling), up to l_max
                length = min(max(needed, 2 * state.step_params[0].shape[-1]), self.config.max_position_embeddings)
                state.step_params = self._step_parameters(*self.long_filters(length), state)
            h_rev, skip = state.step_params
        outputs = []
        for t in range(u_all.shape[-1]):
            u_t = u_all[..., t : t + 1]
            window = state.update_conv_state(u_t) if self.config.short_filter_order > 1 else u_t  # (B, C, k)
            uc = short_conv_last_output(self.short_filter, window)
            *xs, v = uc.split(self.config.hidden_size, dim=1)
            dtype = compute_dtype(v.dtype)
            v = v.to(dtype)
            keep = None if padding_mask is None else padding_mask[..., t].to(dtype)  # (B, 1)
            for o, x_i in enumerate(reversed(xs[1:])):
                u = v * (x_i.to(dtype) if keep is None else x_i.to(dtype) * keep)
                if modal:  # s <- p s + u ; y = Re sum_n R_n s_n
                    s = state.update_recurrent_state(poles[o] * state.recurrent_states[o] + u[..., None], state_idx=o)
                    v = (residues[o] * s).sum(-1).real.to(dtype)
                else:  # exact causal convolution sum over the whole history
                    history = state.append(o, u[..., None])
                    v = (history * h_rev[o, :, h_rev.shape[-1] - history.shape[-1] :].to(dtype)).sum(-1)
                if skip is not None:
                    v = v + skip[o].to(dtype) * u
            outputs.append((v * xs[0].to(dtype)).to(hidden_states.dtype))
        return self.out_proj(torch.stack(outputs, dim=1))


# ----------------------------------------------------------------------------------------------------------------------
# H3
# ----------------------------------------------------------------------------------------------------------------------
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
        """The shift SSM as an FIR filter ``(d, seqlen)`` (``d_state`` taps, zero beyond), in at least float32."""
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
        """The diagonal SSM's convolution kernel ``(d, seqlen)``: ``K[l] = 2 Re sum_n dC'_n dA_n^l``."""
        dA, dC = self.diag_ssm_discrete()
        pos = torch.arange(seqlen, device=dA.device, dtype=dA.real.dtype)
        vandermonde = torch.exp(dA.log().unsqueeze(-1) * pos)  # (d, n/2, L)
        return 2 * torch.einsum("dn,dnl->dl", dC, vandermonde).real

    def forward(
        self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None, state: H3State | None = None
    ) -> torch.Tensor:
        """``hidden_states (B, L, d)`` -> ``(B, L, d)``; ``padding_mask`` ``(B, 1, L)`` or None; ``state`` as for
        :meth:`HyenaOperator.forward`."""
        if state is not None and state.step_params is not None:  # prefilled: decode the new tokens
            return self.step(hidden_states, state, padding_mask)
        seqlen = hidden_states.shape[1]
        q = linear_channels_first(self.q_proj, hidden_states)
        k = linear_channels_first(self.k_proj, hidden_states)
        v = linear_channels_first(self.v_proj, hidden_states)
        impl = self.config.long_conv_impl
        with no_autocast():
            shift_kernel, ssm_kernel = self.shift_kernel(seqlen), self.ssm_kernel(seqlen)
        kv = long_conv(k, shift_kernel, self.shift_D, padding_mask, v, impl=impl)
        y = long_conv(kv, ssm_kernel, self.D, padding_mask, q, impl=impl)
        if state is not None:
            self._prefill_state(k, kv, padding_mask, state)
        return self.out_proj(y.transpose(1, 2))

    def _prefill_state(self, k, kv, padding_mask, state: H3State) -> None:
        """Shift state: the last d_state keys; SSM state: sum_t dA^(T-1-t) dC' kv_t (what the recurrence reaches)."""
        n = self.config.ssm_state_size
        dtype = compute_dtype(k.dtype)
        k = k.to(dtype) if padding_mask is None else k.to(dtype) * padding_mask.to(dtype)
        kv = kv if padding_mask is None else kv * padding_mask.to(kv.dtype)
        state.update_conv_state(k, conv_kernel_size=n)  # the last d_state keys (zeros before the start)
        dA, dC = self.diag_ssm_discrete()
        state.update_recurrent_state(dC.unsqueeze(0) * decayed_sum(kv, dA))
        state.step_params = (self.shift_kernel(n).flip(-1), dA, dC)

    def step(
        self, hidden_states: torch.Tensor, state: H3State, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """H3's recurrence: shift SSM as an FIR window, diagonal SSM as a complex state; O(d * d_state) per token.
        Padded new tokens (``padding_mask (B, 1, n)`` zero) enter as zero keys and zero SSM inputs, as in forward."""
        shift_kernel, dA, dC = state.step_params
        outputs = []
        for t in range(hidden_states.shape[1]):
            x = hidden_states[:, t]
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
            dtype = compute_dtype(k.dtype)
            k = k.to(dtype)
            keep = None if padding_mask is None else padding_mask[:, 0, t, None].to(dtype)  # (B, 1)
            if keep is not None:
                k = k * keep
            window = state.update_conv_state(k[..., None])[..., 1:]  # the last d_state keys
            kv = ((window * shift_kernel).sum(-1) + self.shift_D.to(dtype) * k) * v.to(dtype)
            if keep is not None:
                kv = kv * keep
            ssm = state.update_recurrent_state(dA * state.ssm + dC * kv[..., None])
            y = 2 * ssm.sum(-1).real + self.D.to(dtype) * kv
            outputs.append((y * q.to(dtype)).to(hidden_states.dtype))
        return self.out_proj(torch.stack(outputs, dim=1))


# ----------------------------------------------------------------------------------------------------------------------
# Attention (hybrid layers)
# ----------------------------------------------------------------------------------------------------------------------
def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


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
            self.register_buffer("inv_freq", self.rotary_inv_freq(config), persistent=False)

    @staticmethod
    def rotary_inv_freq(config: HyenaConfig) -> torch.Tensor:
        """Rotary inverse frequencies ``(rotary_emb_dim / 2,)`` in float32."""
        dim = config.rotary_emb_dim
        return 1.0 / (config.rotary_emb_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))

    def _apply_rotary(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        freqs = position_ids[:, None, :, None].to(self.inv_freq.dtype) * self.inv_freq  # (B, 1, L, r/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        rot, rest = x[..., : self.rotary_dim], x[..., self.rotary_dim :]
        return torch.cat((rot * cos + _rotate_half(rot) * sin, rest), dim=-1)

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
        :func:`_attention_mask`). The kernel comes from transformers' attention interface."""
        bsz, seqlen, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(bsz, seqlen, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        if self.rotary_dim:
            q, k = self._apply_rotary(q, position_ids), self._apply_rotary(k, position_ids)
        if layer_cache is not None:
            k, v = layer_cache.update(k, v)
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention = (
            eager_attention_forward if implementation in (None, "eager") else ALL_ATTENTION_FUNCTIONS[implementation]
        )
        out, weights = attention(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.head_dim**-0.5,
        )
        return self.out_proj(out.reshape(bsz, seqlen, -1)), weights


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    """Plain attention: ``softmax(q kᵀ · scaling + mask) v`` for ``q (B, H, L, hd)``, ``k, v (B, H, T, hd)`` and an
    additive ``mask (B|1, 1, L, T)``; returns the output ``(B, L, H, hd)`` and the weights ``(B, H, L, T)``."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask.to(weights.dtype)
    weights = F.softmax(weights, dim=-1, dtype=torch.promote_types(query.dtype, torch.float32)).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _attention_mask(
    attention_mask: torch.Tensor | None, q_len: int, kv_len: int, dtype: torch.dtype, device, implementation: str | None
) -> torch.Tensor | None:
    """The mask each attention kernel expects (as transformers' masking utilities build them): flash attention a
    ``(B, T)`` padding mask (None without padding; it applies causality itself), SDPA a boolean ``(B|1, 1, q, T)``
    mask (True = attend) or None where its own causal flag is right, eager an additive mask in ``dtype``, always."""
    if implementation and implementation.startswith("flash_attention"):
        return attention_mask[:, -kv_len:] if _has_padding(attention_mask) else None
    eager = implementation in (None, "eager")
    allowed = _allowed_positions(attention_mask, q_len, kv_len, device, always=eager)
    if allowed is None or not eager:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


def _allowed_positions(
    attention_mask: torch.Tensor | None, q_len: int, kv_len: int, device, always: bool = False
) -> torch.Tensor | None:
    """Boolean (B|1, 1, q, kv) causal + padding mask for queries at positions kv_len-q_len .. kv_len-1.

    None when plain causal attention is right (no padding, and no cached prefix or a single query), unless
    ``always``. Every query may attend to itself, so fully padded rows give finite values instead of NaN.
    """
    past = kv_len - q_len
    if not _has_padding(attention_mask) and (past == 0 or q_len == 1) and not always:
        return None
    q_pos = torch.arange(past, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    allowed = (k_pos <= q_pos)[None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, -kv_len:].bool()
    allowed = allowed | (k_pos == q_pos)[None]
    return allowed[:, None]


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
        """fc1 -> tanh-GELU -> fc2 on ``x (..., d)``; CPU inference takes the row-blocked engine of ops_cpu."""
        if ops_cpu.mlp_rows_apply(self, x):
            return ops_cpu.mlp_in_row_blocks(self, x)
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


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

    def _add_norm(self, hidden_states, residual, dropout, norm):
        dropped = dropout(hidden_states)
        residual = dropped + residual if residual is not None else dropped
        hidden_states = norm(residual.to(dtype=norm.weight.dtype))
        if self.config.residual_in_fp32:  # "at least fp32": a float64 model keeps a float64 residual
            residual = residual.to(torch.promote_types(residual.dtype, torch.float32))
        return hidden_states, residual

    def forward(
        self,
        hidden_states,
        residual=None,
        padding_mask=None,
        attn_mask=None,
        position_ids=None,
        layer_cache=None,
        output_attentions=False,
    ):
        """Returns the block's output, the residual stream and the attention weights (None but for attention layers
        asked for them)."""
        hidden_states, residual = self._add_norm(hidden_states, residual, self.dropout1, self.norm1)
        weights = None
        if self.mixer_type == "attention":
            hidden_states, weights = self.mixer(hidden_states, attn_mask, position_ids, layer_cache, output_attentions)
        else:
            hidden_states = self.mixer(hidden_states, padding_mask, layer_cache)
        hidden_states, residual = self._add_norm(hidden_states, residual, self.dropout2, self.norm2)
        return self.mlp(hidden_states), residual, weights


class HyenaPreTrainedModel(PreTrainedModel):
    _is_stateful = True
    config_class = HyenaConfig
    config: HyenaConfig
    base_model_prefix = "backbone"
    _no_split_modules = ["HyenaBlock"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    # Tensors that define long filters load in float32 whatever dtype is asked for (see hyena_hf.precision).
    _keep_in_fp32_modules_strict = FLOAT32_PARAMETER_PATTERNS
    # Keys a task head may legitimately lack in a checkpoint of another head (initialised fresh, as transformers does).
    _new_head_prefixes = ("lm_head.", "score.")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, plus two refusals: a backbone weight missing from the checkpoint (a config that does
        not match the weights, e.g. another ``filter_type``, would otherwise leave randomly initialised mixers behind
        a load-report warning) and weights holding NaN/inf (a damaged file)."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        fresh = sorted(k for k in info["missing_keys"] if not k.startswith(cls._new_head_prefixes))
        if fresh:
            shown = ", ".join(fresh[:3]) + (f" and {len(fresh) - 3} more" if len(fresh) > 3 else "")
            raise ValueError(
                f"{pretrained_model_name_or_path}: the checkpoint has no weights for {shown}; its config "
                "does not describe these weights (filter_type, hyena_order, attn_layer_idx?)"
            )
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not tensor.is_meta and not bool(torch.isfinite(tensor).all()):
                raise ValueError(
                    f"{pretrained_model_name_or_path}: weight {name} holds NaN or infinite values "
                    "(a damaged or corrupted file)"
                )
        rounded = half_precision_filter_tensors(pretrained_model_name_or_path)
        if rounded:
            warnings.warn(
                f"{pretrained_model_name_or_path} stores {len(rounded)} long-filter tensors in half precision "
                f"({rounded[0]}, ...): they are used in float32, but their rounding cannot be undone and can "
                "change the outputs completely; re-save or re-convert the model from float32 weights",
                stacklevel=2,
            )
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        """transformers' save, plus the model's code and an ``auto_map`` (see :mod:`hyena_hf.remote_code`), so the
        folder loads with ``trust_remote_code=True`` where hyena-hf is not installed."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_model_code(save_directory)
        if push_to_hub:  # push_to_hub saves again (through this method) into the folder it uploads
            self.push_to_hub(kwargs.get("repo_id") or Path(save_directory).name, token=kwargs.get("token"))

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """transformers' resize in this model's terms: ``new_num_tokens`` becomes ``config.vocab_size`` (the width of
        the logits) and the embedding (and an untied head) keep ``vocab_size`` rounded up to ``pad_to_multiple_of``
        (else ``config.pad_vocab_size_multiple``) rows, so the resized model saves and loads. Old tokens keep their
        rows (their logits do not change); new tokens are initialised as transformers does (around the mean of the
        old tokens' rows with ``mean_resizing``, else normal with ``initializer_range``); padding rows are zero."""
        config = self.config
        if new_num_tokens is None and pad_to_multiple_of is None:
            return self.get_input_embeddings()
        old_vocab, new_vocab = config.vocab_size, int(new_num_tokens or config.vocab_size)
        multiple = int(pad_to_multiple_of or config.pad_vocab_size_multiple)
        if new_vocab < 1 or multiple < 1:
            raise ValueError(
                f"resize_token_embeddings needs new_num_tokens >= 1 and pad_to_multiple_of >= 1, got "
                f"{new_vocab} and {multiple}"
            )
        rows = -(-new_vocab // multiple) * multiple
        embeddings = self.get_input_embeddings()
        head = self.get_output_embeddings()
        tied = head is not None and head.weight is embeddings.weight
        embeddings.weight = nn.Parameter(
            self._resized_rows(embeddings, old_vocab, new_vocab, rows, mean_resizing),
            requires_grad=embeddings.weight.requires_grad,
        )
        embeddings.num_embeddings = rows
        if head is not None and not tied:
            head.weight = nn.Parameter(
                self._resized_rows(head, old_vocab, new_vocab, rows, mean_resizing),
                requires_grad=head.weight.requires_grad,
            )
            head.out_features = rows
        config.vocab_size, config.pad_vocab_size_multiple = new_vocab, multiple
        self.tie_weights()
        return embeddings

    @torch.no_grad()
    def _resized_rows(
        self, module: nn.Module, old_vocab: int, new_vocab: int, rows: int, mean_resizing: bool
    ) -> torch.Tensor:
        """``module.weight (old rows, d)`` -> ``(rows, d)``: the first ``min(old, new)`` token rows kept, new token rows
        initialised, padding rows zero."""
        weight = module.weight
        keep, added = min(old_vocab, new_vocab), max(0, new_vocab - old_vocab)
        out = weight.new_zeros(rows, weight.shape[1])
        out[:keep] = weight[:keep]
        if added:
            old_rows = nn.Embedding.from_pretrained(weight[:old_vocab].detach())
            new_rows = nn.Embedding(new_vocab, weight.shape[1], device=weight.device, dtype=weight.dtype)
            if mean_resizing:  # transformers' own initialisation of added tokens
                self._init_added_embeddings_weights_with_mean(old_rows, new_rows, old_vocab, added)
            else:
                new_rows.weight.normal_(std=self.config.initializer_range)
            out[old_vocab:new_vocab] = new_rows.weight[old_vocab:]
        return out

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
        elif isinstance(module, ModalFilter):  # damped modes spread over frequencies, small residues
            channels, n, _ = module.poles.shape
            magnitude = 0.5 + 0.49 * torch.rand(channels, n)
            angle = math.pi * torch.rand(channels, n)
            init.copy_(module.poles, torch.view_as_real(torch.polar(magnitude, angle)))
            init.normal_(module.residues, std=0.1)
            init.normal_(module.D, std=1.0)
        elif isinstance(module, H3Mixer):
            self._init_h3(module)
        elif isinstance(module, HyenaAttention) and module.rotary_dim:
            init.copy_(module.inv_freq, module.rotary_inv_freq(cfg))

    def _init_h3(self, module: H3Mixer) -> None:
        """S4D-Lin init: A = -1/2 + i pi n, dt log-uniform in [1e-3, 1e-1], B = 1, C ~ N(0, 1/2) complex;
        shift B = e_1."""
        d, half = module.ssm_inv_A_real.shape
        init.constant_(module.ssm_inv_A_real, math.log(0.5))
        init.copy_(module.ssm_A_imag, math.pi * torch.arange(half).float().expand(d, half))
        log_dt = torch.rand(d) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
        init.copy_(module.ssm_log_dt, log_dt)
        init.copy_(module.ssm_B, torch.stack([torch.ones(d, half), torch.zeros(d, half)], dim=-1))
        init.normal_(module.ssm_C, std=0.5**0.5)
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
        past_key_values: HyenaCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | BaseModelOutputWithPast:
        r"""
        past_key_values (`HyenaCache`, *optional*): decoding state from a previous call (see `hyena_hf.cache_hyena`);
            then `input_ids` holds only the new tokens and `attention_mask` covers past and new tokens.
        use_cache (`bool`, *optional*): return a `HyenaCache` to continue decoding from.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        use_cache = (
            use_cache if use_cache is not None else (self.config.use_cache and not self.training and not _tracing())
        )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            _check_input_ids(input_ids, self.config.vocab_size)
            inputs_embeds = self.embeddings(input_ids)
        elif inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds must have shape (batch, seq_len, {self.config.hidden_size}), got "
                f"{tuple(inputs_embeds.shape)}"
            )
        bsz, seqlen = inputs_embeds.shape[:2]
        if use_cache and past_key_values is None:
            past_key_values = HyenaCache(self.config)
        if past_key_values is not None and not isinstance(past_key_values, HyenaCache):
            raise ValueError(f"past_key_values must be a HyenaCache, got {type(past_key_values).__name__}")
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        total = past + seqlen
        _check_length(self.config, total)
        if attention_mask is not None and tuple(attention_mask.shape) != (bsz, total):
            raise ValueError(
                f"attention_mask must have shape {(bsz, total)} (past + new tokens), got {tuple(attention_mask.shape)}"
            )
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
            else:
                position_ids = torch.arange(past, total, device=inputs_embeds.device)[None].expand(bsz, -1)

        if bsz == 0 or seqlen == 0:  # nothing to mix: empty outputs, the cache as it was
            return self._empty_output(
                inputs_embeds, past_key_values, output_hidden_states, output_attentions, return_dict
            )
        new_mask = None if attention_mask is None else attention_mask[:, past:]
        if new_mask is not None:  # padded positions are selected away, not multiplied (NaN * 0 is NaN)
            inputs_embeds = inputs_embeds.masked_fill(~new_mask.bool()[..., None], 0.0)
        padding_mask = _padding_mask(new_mask, inputs_embeds.dtype)
        attn_mask = None
        if self.config.attn_layer_idx:
            implementation = "eager" if output_attentions else self.config._attn_implementation
            attn_mask = _attention_mask(
                attention_mask, seqlen, total, inputs_embeds.dtype, inputs_embeds.device, implementation
            )

        hidden_states, residual = inputs_embeds, None
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for i, block in enumerate(self.layers):
            if output_hidden_states:
                all_hidden_states += (hidden_states if residual is None else residual,)
            layer_cache = past_key_values.layers[i] if past_key_values is not None else None
            hidden_states, residual, weights = block(
                hidden_states, residual, padding_mask, attn_mask, position_ids, layer_cache, output_attentions
            )
            if output_attentions and weights is not None:  # attention layers only (as in transformers' hybrids)
                all_attentions += (weights,)
        residual = self.drop_f(hidden_states) + residual
        hidden_states = self.norm_f(residual.to(dtype=self.norm_f.weight.dtype))
        if past_key_values is not None:
            past_key_values.seen_tokens = total
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return self._output(hidden_states, past_key_values, all_hidden_states, all_attentions, return_dict)

    def _empty_output(self, inputs_embeds, past_key_values, output_hidden_states, output_attentions, return_dict):
        hidden_states = self.norm_f(inputs_embeds.to(self.norm_f.weight.dtype))
        all_hidden_states = (hidden_states,) * (len(self.layers) + 1) if output_hidden_states else None
        return self._output(
            hidden_states, past_key_values, all_hidden_states, () if output_attentions else None, return_dict
        )

    @staticmethod
    def _output(hidden_states, past_key_values, all_hidden_states, all_attentions, return_dict):
        if not return_dict:
            return tuple(
                v for v in (hidden_states, past_key_values, all_hidden_states, all_attentions) if v is not None
            )
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


def _check_input_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Shape, dtype and range of token ids, with a one-line error (an embedding lookup would fail with a bare
    IndexError, or silently read the padding rows beyond vocab_size)."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.numel() and not _tracing():
        low, high = (int(v) for v in input_ids.aminmax())
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"input_ids must be token ids in [0, vocab_size={vocab_size}), got values from {low} to {high}"
            )


class HyenaForCausalLM(HyenaPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: HyenaConfig):
        super().__init__(config)
        self.backbone = HyenaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The model builds its own HyenaCache (conv / SSM states + attention KV) on the first forward.
        return False

    def get_input_embeddings(self):
        return self.backbone.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.backbone.embeddings = new_embeddings

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def prepare_inputs_for_generation(
        self,
        input_ids,
        past_key_values=None,
        attention_mask=None,
        inputs_embeds=None,
        is_first_iteration=False,
        **kwargs,
    ):
        """transformers' own preparation (it slices what the cache has seen, takes ``inputs_embeds`` for the prefill and
        forwards every other keyword), after refusing an empty prompt."""
        if (
            inputs_embeds is None
            and input_ids.shape[1] == 0
            and not (past_key_values and past_key_values.get_seq_length())
        ):
            raise ValueError(
                "generate() needs a prompt of at least one token, got input_ids of length 0 (start from "
                "a BOS token, e.g. tokenizer.bos_token_id)"
            )
        return super().prepare_inputs_for_generation(
            input_ids,
            past_key_values=past_key_values,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: HyenaCache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_logits_to_keep: int | None = None,
        **kwargs,
    ) -> tuple | CausalLMOutputWithPast:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.backbone(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        if num_logits_to_keep is not None:
            logits_to_keep = num_logits_to_keep
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        hidden_states = hidden_states[:, keep]
        # Only the real vocabulary: the padded rows of the tied embedding are never predicted. (The head is called as
        # a module so accelerate's offload hooks work; the few padded columns are dropped afterwards.)
        logits = self.lm_head(hidden_states.to(self.lm_head.weight.dtype))[..., : self.config.vocab_size]
        loss = None
        if labels is not None:
            if kwargs.get("num_items_in_batch") is None:
                # The mean over target tokens as sum / count: the same value, but 0 (not NaN) when every label is
                # ignored. Trainer passes the count of the whole accumulated batch itself.
                targets = kwargs.get("shift_labels")
                targets = labels[..., 1:] if targets is None else targets
                kwargs["num_items_in_batch"] = (targets != -100).sum().clamp(min=1)
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        if not return_dict:
            output = (logits,) + tuple(
                v for v in (outputs.past_key_values, outputs.hidden_states, outputs.attentions) if v is not None
            )
            return ((loss,) + output) if loss is not None else output
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


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
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | SequenceClassifierOutputWithPast:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.backbone(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
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
            output = (pooled_logits,) + tuple(v for v in (outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss,) + output) if loss is not None else output
        return SequenceClassifierOutputWithPast(
            loss=loss, logits=pooled_logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "HyenaPreTrainedModel",
    "HyenaModel",
    "HyenaForCausalLM",
    "HyenaForSequenceClassification",
]
