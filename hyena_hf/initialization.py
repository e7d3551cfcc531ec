"""The original initialisation (safari/H3 ``_init_weights`` and module constructors), one function per kind of
module; ``HyenaPreTrainedModel._init_weights`` picks the function. Through ``transformers.initialization`` so that
transformers' loading skips weights a checkpoint provides."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import initialization as init

from .configuration_hyena import HyenaConfig


def init_standard_module(module: nn.Module, config: HyenaConfig) -> None:
    """Linear (GPT-2 rescaled residual projections), Embedding, LayerNorm and Conv1d (PyTorch's default)."""
    std = config.initializer_range
    if isinstance(module, nn.Linear):
        if config.rescale_prenorm_residual and getattr(module, "is_residual_projection", False):
            # GPT-2 scheme of the original: residual-branch outputs scaled by 1/sqrt(2 n_layer)
            init.normal_(module.weight, std=std / math.sqrt(2 * config.num_hidden_layers))
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


def init_implicit_filter(module: nn.Module, config: HyenaConfig, z: torch.Tensor, t: torch.Tensor) -> None:
    """Positional features ``z (1, L, emb), t (1, L, 1)``, Sin frequency, modulation decays, skip ~ N(0, 1)."""
    init.copy_(module.z, z)
    init.copy_(module.t, t)
    init.constant_(module.sin_freq, float(config.filter_sin_freq))
    max_decay = math.log(config.modulation_target) / config.modulation_fast_decay_pct
    min_decay = math.log(config.modulation_target) / config.modulation_slow_decay_pct
    init.copy_(module.deltas, torch.linspace(min_decay, max_decay, module.channels)[None, None])
    init.normal_(module.D, std=1.0)


def init_modal_filter(module: nn.Module) -> None:
    """Damped modes spread over frequencies (|p| in [0.5, 0.99)), small residues, skip ~ N(0, 1)."""
    channels, n, _ = module.poles.shape
    magnitude = 0.5 + 0.49 * torch.rand(channels, n)
    angle = math.pi * torch.rand(channels, n)
    init.copy_(module.poles, torch.view_as_real(torch.polar(magnitude, angle)))
    init.normal_(module.residues, std=0.1)
    init.normal_(module.D, std=1.0)


def init_h3(module: nn.Module) -> None:
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


def init_rotary(module: nn.Module, inv_freq: torch.Tensor) -> None:
    """The attention layer's rotary frequencies (a buffer, recomputed: it is not saved)."""
    init.copy_(module.inv_freq, inv_freq)
