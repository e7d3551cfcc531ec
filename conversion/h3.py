"""H3 checkpoints (danfu09/H3-*): ``model.pt``, a plain ``SSMLMHeadModel`` state dict or a Lightning-wrapped one.

Complex S4D parameters are stored as ``view_as_real`` tensors (trailing dim 2) and kept that way.
"""

from __future__ import annotations

import torch

FORMAT = "h3"
FAMILY = "h3"


def detect(keys: set[str]) -> bool:
    return any(".mixer.ssm_k_kernel." in k for k in keys)


def canonicalize(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith("model.backbone.") for k in state_dict):
        return {k[len("model.") :] if k.startswith("model.") else k: v for k, v in state_dict.items()}
    return dict(state_dict)
