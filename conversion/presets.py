"""One preset per released checkpoint: where it lives, its format, its tokenizer, and the original constructor
fields that its tensors' shapes do not determine (in the original repositories' own spelling).

Shape-determined fields (width, depth, MLP width, order, filter sizes, l_max, attention layer indices) are listed
only where the released configs state them; the converter checks them against the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .checkpoint_io import ConversionError


@dataclass(frozen=True)
class Preset:
    hub_id: str
    filename: str
    format: str
    tokenizer: str  # "gpt2" | "hyenadna-char"
    original_config: dict = field(default_factory=dict)
    config_filename: str | None = None  # original config shipped next to the weights (HyenaDNA's config.json)


_HYENA_SMALL = {
    # configs/evals/hyena_small_150b.yaml of safari (the training config says modulate: True; the released weights
    # are evaluated with modulate: False).
    "d_model": 864,
    "n_layer": 18,
    "d_inner": 1728,
    "vocab_size": 50257,
    "pad_vocab_size_multiple": 8,
    "resid_dropout": 0.0,
    "embed_dropout": 0.1,
    "residual_in_fp32": True,
    "layer": {
        "_name_": "hyena",
        "emb_dim": 33,
        "filter_order": 64,
        "local_order": 3,
        "l_max": 2048,
        "modulate": False,
        "w": 14,
    },
}

_HYENADNA = {
    "vocab_size": 12,
    "pad_vocab_size_multiple": 8,
    "residual_in_fp32": True,
    "resid_dropout": 0.0,
    "embed_dropout": 0.1,
    "layer": {
        "_name_": "hyena",
        "emb_dim": 5,
        "filter_order": 64,
        "local_order": 3,
        "modulate": True,
        "w": 10,
        "lr": 6e-4,
        "wd": 0.0,
        "lr_pos_emb": 0.0,
    },
}


def _h3(attn_layer_idx: list[int], num_heads: int, rotary_emb_dim: int | None = None) -> dict:
    attn_cfg = {"num_heads": num_heads}
    if rotary_emb_dim:
        attn_cfg["rotary_emb_dim"] = rotary_emb_dim
    return {
        "vocab_size": 50257,
        "pad_vocab_size_multiple": 8,
        "attn_layer_idx": attn_layer_idx,
        "attn_cfg": attn_cfg,
        "ssm_cfg": {"mode": "diag", "measure": "diag-lin"},
    }


# The released HyenaDNA checkpoints, each as the original Lightning checkpoint and as a ``-hf`` safetensors repo.
_HYENADNA_SIZES = (
    "tiny-1k-seqlen",
    "tiny-1k-seqlen-d256",
    "tiny-16k-seqlen-d128",
    "small-32k-seqlen",
    "medium-160k-seqlen",
    "medium-450k-seqlen",
    "large-1m-seqlen",
)

PRESETS: dict[str, Preset] = {
    "hyena-small-150b-tok": Preset(
        "Zymrael/hyena-small-150b-tok", "hyena_small_150b_tok.ckpt", "safari", "gpt2", _HYENA_SMALL
    ),
    **{
        f"hyenadna-{size}": Preset(
            f"LongSafari/hyenadna-{size}",
            "weights.ckpt",
            "hyenadna",
            "hyenadna-char",
            _HYENADNA,
            config_filename="config.json",
        )
        for size in _HYENADNA_SIZES
    },
    **{
        f"hyenadna-{size}-hf": Preset(
            f"LongSafari/hyenadna-{size}-hf",
            "model.safetensors",
            "hyenadna-hf",
            "hyenadna-char",
            _HYENADNA,
            config_filename="config.json",
        )
        for size in _HYENADNA_SIZES
    },
    "h3-125m": Preset("danfu09/H3-125M", "model.pt", "h3", "gpt2", _h3([6], 12)),
    "h3-355m": Preset("danfu09/H3-355M", "model.pt", "h3", "gpt2", _h3([8, 16], 16)),
    "h3-1.3b": Preset("danfu09/H3-1.3B", "model.pt", "h3", "gpt2", _h3([8, 16], 16)),
    "h3-2.7b": Preset("danfu09/H3-2.7B", "model-3attn.pt", "h3", "gpt2", _h3([8, 16, 24], 20)),
    "h3-2.7b-rotary": Preset("danfu09/H3-2.7B", "model-2attn-rotary.pt", "h3", "gpt2", _h3([10, 21], 20, 64)),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConversionError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def merge_original_config(base: dict, override: dict) -> dict:
    """``override`` (a user's original-config file) wins over a preset, nested ``layer``/``attn_cfg``/``ssm_cfg``
    merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
