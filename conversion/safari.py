"""safari Hyena checkpoints (e.g. Zymrael/hyena-small-150b-tok): a plain state dict of ``ConvLMHeadModel``."""

from __future__ import annotations

import torch

FORMAT = "safari"
FAMILY = "safari"


def detect(keys: set[str]) -> bool:
    return any(k.startswith("backbone.layers.") and ".mixer.filter_fn." in k for k in keys)


def canonicalize(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Already in the canonical layout (no prefix)."""
    return dict(state_dict)
