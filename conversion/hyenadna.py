"""HyenaDNA checkpoints.

* ``hyenadna``: ``weights.ckpt`` of LongSafari/hyenadna-*-seqlen, a Lightning checkpoint whose ``state_dict`` keys
  carry a ``model.`` prefix; models trained with ``checkpoint_mixer`` / ``checkpoint_mlp`` have an extra ``.layer.``
  segment (``mixer.layer.in_proj``); ``config.json`` holds the original constructor fields.
* ``hyenadna-hf``: the ``-hf`` hub twins, ``model.safetensors`` with keys ``hyena.backbone.*`` and ``lm_head.weight``.

Modulation shift: the training code (which produced the weights) uses 0.0; ``standalone_hyenadna.py`` and the -hf
port use 0.05. The converter defaults to the trained behaviour and records the shift in the config.
"""

from __future__ import annotations

import re

import torch

FORMAT = "hyenadna"
HF_FORMAT = "hyenadna-hf"
FAMILY = "hyenadna"
TRAINING_SHIFT = 0.0
STANDALONE_SHIFT = 0.05

_CHECKPOINT_WRAPPER = re.compile(r"(backbone\.layers\.\d+\.(?:mixer|mlp))\.layer\.")


def detect(keys: set[str]) -> bool:
    return any(k.startswith("model.backbone.layers.") and ".filter_fn." in k for k in keys)


def detect_hf(keys: set[str]) -> bool:
    return any(k.startswith("hyena.backbone.") for k in keys)


def _strip(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            key = key[len(prefix) :]
        out[_CHECKPOINT_WRAPPER.sub(r"\1.", key)] = value
    return out


def canonicalize(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _strip(state_dict, "model.")


def canonicalize_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _strip(state_dict, "hyena.")


def to_hf_layout(canonical: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The -hf twins' key layout, from canonical keys (used to build test files of that layout)."""
    return {(k if k == "lm_head.weight" else "hyena." + k): v for k, v in canonical.items()}


def original_kwargs_from_hf_config(hf_config: dict) -> dict:
    """The -hf twins' ``config.json`` (``model_type: hyenadna``) in the original constructor spelling."""
    missing = [k for k in ("d_model", "n_layer", "vocab_size", "max_seq_len") if k not in hf_config]
    if missing:
        from .checkpoint_io import ConversionError

        raise ConversionError(f"HyenaDNA -hf config.json lacks {missing}")
    layer = {"_name_": "hyena", "l_max": hf_config["max_seq_len"], "modulate": True}
    for hf_key, key in (
        ("emb_dim", "emb_dim"),
        ("filter_order", "filter_order"),
        ("hyena_order", "order"),
        ("short_filter_order", "short_filter_order"),
        ("num_inner_mlps", "num_inner_mlps"),
        ("activation_freq", "w"),
    ):
        if hf_key in hf_config:
            layer[key] = hf_config[hf_key]
    kwargs = {
        "d_model": hf_config["d_model"],
        "n_layer": hf_config["n_layer"],
        "vocab_size": hf_config["vocab_size"],
        "pad_vocab_size_multiple": hf_config.get("pad_vocab_size_multiple", 8),
        "residual_in_fp32": True,
        "layer": layer,
    }
    for key in ("d_inner", "layer_norm_epsilon", "embed_dropout"):
        if hf_config.get(key) is not None:
            kwargs[key] = hf_config[key]
    return kwargs
