"""Numerical precision policy: what stays in float32 when a model runs in half precision, and how close half
precision must come to float32.

A long filter is computed from a handful of parameters (the implicit filter's positional embedding, Sin frequency
and MLP, the modal poles/residues, H3's SSM parameters); rounding any of them to bfloat16 changes the filter by
40-80 %, and so the model's output completely. Those parameters therefore stay in float32 on every route to a
half-precision model, and the long convolution runs in float32; the dense layers run in the half dtype.
"""

from __future__ import annotations

import re
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn


def logits_agreement(logits: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Relative L2 error ``||logits - reference|| / ||reference||`` and the fraction of rows whose argmax agrees;
    ``logits``, ``reference``: (N, V)."""
    logits, reference = logits.double(), reference.double()
    relative = ((logits - reference).norm() / reference.norm()).item()
    agreement = (logits.argmax(-1) == reference.argmax(-1)).double().mean().item()
    return relative, agreement


HALF_DTYPES = (torch.float16, torch.bfloat16)

# Names of the tensors that define long filters, per mixer: the implicit / modal filter modules, and H3's SSM
# parameters and skip. transformers' ``_keep_in_fp32_modules_strict`` patterns: the loader searches them as regular
# expressions in parameter names, and transformers' model tests read them as whole dotted components
# (``(^|\.)pattern(\.|$)``); these mean the same under both.
FLOAT32_PATTERNS_BY_MIXER = {
    "implicit": ["mixer.filter"],
    "modal": ["mixer.filter"],
    "h3": [r"mixer.shift_[BCD]", r"mixer.ssm_\w+", "mixer.D"],
    "attention": [],
}


def float32_parameter_patterns(mixer_types: list[str]) -> list[str]:
    """The patterns of :data:`FLOAT32_PATTERNS_BY_MIXER` for a model with these mixers (each pattern names weights
    the model has)."""
    return sorted({p for kind in mixer_types for p in FLOAT32_PATTERNS_BY_MIXER[kind]})


FLOAT32_PARAMETER_PATTERNS = float32_parameter_patterns(list(FLOAT32_PATTERNS_BY_MIXER))  # every mixer's


# Largest error of the logits against the float32 model (relative L2) and smallest argmax agreement per dtype; the
# converter's --reference check fails outside them.
PARITY_BOUNDS = {
    torch.float64: (1e-4, 0.99),
    torch.float32: (1e-4, 0.99),
    torch.bfloat16: (3e-2, 0.95),
    torch.float16: (5e-3, 0.98),
}


@contextmanager
def float32_default_dtype():
    """Create tensors in at least float32 while inside (a model built under a half default dtype, as
    ``from_pretrained(dtype=...)`` does, still builds its filters in float32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.promote_types(previous, torch.float32))
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextmanager
def no_autocast():
    """Autocast off wherever it is on (filters are computed in float32 under ``Trainer(bf16=True)`` too)."""
    with ExitStack() as stack:
        for device_type in ("cpu", "cuda"):
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield


def _without_downcast(fn):
    def apply(tensor: torch.Tensor) -> torch.Tensor:
        out = fn(tensor)
        if out.dtype in HALF_DTYPES and tensor.is_floating_point() and tensor.dtype not in HALF_DTYPES:
            return tensor.to(device=out.device)  # the move alone: the precision is kept
        return out

    return apply


def linear_in_dtype(linear: nn.Linear, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``linear(x)`` computed in ``dtype``, ``x (..., in)`` -> ``(..., out)``: a filter MLP of a half-precision
    model still runs in float32. Called as a module when the weights already have that dtype, so accelerate's offload
    hooks work."""
    if linear.weight.dtype == dtype:
        return linear(x)
    bias = None if linear.bias is None else linear.bias.to(dtype)
    return torch.nn.functional.linear(x, linear.weight.to(dtype), bias)


class KeepsFloat32(nn.Module):
    """Mixin: the module's own parameters and buffers (and, with ``float32_children``, its submodules') ignore casts
    to half precision — ``.to(torch.bfloat16)``, ``.half()``, ``.bfloat16()`` — while device moves still apply."""

    float32_children = True

    def _apply(self, fn, recurse=True):
        if recurse and not self.float32_children:
            for child in self.children():
                child._apply(fn)
            return super()._apply(_without_downcast(fn), recurse=False)
        return super()._apply(_without_downcast(fn), recurse)


def half_precision_filter_tensors(folder, state_dict: dict | None = None) -> list[str]:
    """Names of long-filter tensors that ``state_dict`` (when given) or else the safetensors files of a local model
    folder store in half precision (their rounding cannot be undone by computing in float32 afterwards); [] for
    anything else (a hub id, or no folder)."""
    pattern = re.compile("|".join(FLOAT32_PARAMETER_PATTERNS))
    if state_dict is not None:
        return sorted(
            k for k, v in state_dict.items() if pattern.search(k) and getattr(v, "dtype", None) in HALF_DTYPES
        )
    if folder is None or not Path(folder).is_dir():
        return []
    folder = Path(folder)
    names = []
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            names += [
                key
                for key in handle.keys()
                if pattern.search(key) and handle.get_slice(key).get_dtype() in ("BF16", "F16")
            ]
    return names
