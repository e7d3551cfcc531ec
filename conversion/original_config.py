"""HyenaConfig from the ORIGINAL constructor fields (as the original repositories write them) plus the tensors' shapes.

Shapes decide what they can (width, depth, MLP width, order, filter sizes, l_max, attention layers, d_state); the
original fields must agree with them. Fields no shape determines come from the original config; a field that
changes the numbers and is neither in the original config nor defaulted by the original code is an error.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from hyena_hf.configuration_hyena import HyenaConfig

from .checkpoint_io import ConversionError
from .mapping import count_layers

# Original fields that only concern training or fused CUDA paths: same function in eval mode.
_IGNORED_TOP = {
    "fused_mlp",
    "fused_dropout_add_ln",
    "checkpoint_mixer",
    "checkpoint_mlp",
    "return_hidden_state",
    "sequence_parallel",
    "process_group",
    "device",
    "dtype",
    "initializer_cfg",
    "dropout_cls",
    "use_flashfftconv",
    "max_position_embeddings",
    "fused_bias_fc",
    "_name_",
    "_target_",
    "use_head",
    "n_classes",
    "pad_vocab_size_multiple",
    "vocab_size",
    "d_model",
    "n_layer",
    "d_inner",
    "residual_in_fp32",
    "layer_norm_epsilon",
    "resid_dropout",
    "embed_dropout",
    "attn_layer_idx",
    "attn_cfg",
    "layer",
    "ssm_cfg",
}
_IGNORED_HYENA = {
    "_name_",
    "lr",
    "wd",
    "lr_pos_emb",
    "modulation_lr",
    "fused_fft_conv",
    "fused_bias_fc",
    "jit_filter",
    "return_state",
    "local_order",
    "dropout",
    "filter_dropout",
    "l_max",
    "order",
    "emb_dim",
    "filter_order",
    "short_filter_order",
    "modulate",
    "w",
    "num_inner_mlps",
    "shift",
    "fast_decay_pct",
    "slow_decay_pct",
    "target",
    "bias",
    "num_heads",
    "inner_factor",
    "layer_idx",
    "use_flashfftconv",
}
# Original options whose non-default value computes something this port does not implement.
_UNSUPPORTED_HYENA = {
    "num_blocks": 1,
    "outer_mixing": False,
    "post_order_ffn": False,
    "activation": "id",
    "normalized": False,
    "linear_mixer": False,
    "bidirectional": False,
    "filter_cls": "hyena-filter",
    "num_heads": 1,
    "inner_factor": 1,
}


def _shape(sd: dict[str, torch.Tensor], key: str) -> torch.Size:
    if key not in sd:
        raise ConversionError(f"missing keys: {key}")
    return sd[key].shape


def _agree(name: str, from_file: Any, from_shapes: Any) -> Any:
    if from_file is not None and from_file != from_shapes:
        raise ConversionError(f"original config says {name}={from_file!r} but the tensors say {from_shapes!r}")
    return from_shapes


def _require(section: dict, key: str, where: str) -> Any:
    if key not in section or section[key] is None:
        raise ConversionError(
            f"original config field {where}{key} is required (not determined by the tensors); "
            "pass --original-config or --preset"
        )
    return section[key]


def _section(parent: dict, key: str) -> dict:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConversionError(f"original config field {key} must be a mapping, got {value!r}")
    return dict(value)


def _number(section: dict, key: str, where: str, default: Any = None, integer: bool = False) -> Any:
    """A numeric field (``default`` when absent), or an error naming it; ranges are checked by HyenaConfig."""
    value = section.get(key) if section.get(key) is not None else default
    if value is None:
        _require(section, key, where)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (integer and value != int(value)):
        kind = "an integer" if integer else "a finite number"
        raise ConversionError(f"original config field {where}{key} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _flag(section: dict, key: str, where: str, default: Any = None) -> bool:
    value = section.get(key) if section.get(key) is not None else default
    if value is None:
        _require(section, key, where)
    if not isinstance(value, bool) and value not in (0, 1):
        raise ConversionError(f"original config field {where}{key} must be true or false, got {value!r}")
    return bool(value)


def config_from_original(
    kwargs: dict, canonical: dict[str, torch.Tensor], family: str, modulation_shift: float | None = None
) -> HyenaConfig:
    """``family``: "safari" | "hyenadna" | "h3". ``modulation_shift`` overrides the trained-code default."""
    kwargs = dict(kwargs or {})
    emb_rows, d_model = _shape(canonical, "backbone.embeddings.word_embeddings.weight")
    n_layer = count_layers(canonical)
    fields: dict[str, Any] = {
        "hidden_size": _agree("d_model", kwargs.get("d_model"), d_model),
        "num_hidden_layers": _agree("n_layer", kwargs.get("n_layer"), n_layer),
        "intermediate_size": _agree(
            "d_inner", kwargs.get("d_inner"), _shape(canonical, "backbone.layers.0.mlp.fc1.weight")[0]
        ),
        "residual_in_fp32": _flag(kwargs, "residual_in_fp32", "", False),
        "layer_norm_epsilon": _number(kwargs, "layer_norm_epsilon", "", 1e-5),
        "resid_pdrop": _number(kwargs, "resid_dropout", "", 0.0),
        "embd_pdrop": _number(kwargs, "embed_dropout", "", 0.1),
    }
    unknown = set(kwargs) - _IGNORED_TOP
    if unknown:
        raise ConversionError(f"unknown original config fields: {sorted(unknown)}")

    vocab_size = _number(kwargs, "vocab_size", "", integer=True)
    multiple = _number(kwargs, "pad_vocab_size_multiple", "", 1, integer=True)
    if vocab_size < 1 or multiple < 1:
        raise ConversionError(
            f"original config fields vocab_size and pad_vocab_size_multiple must be >= 1, got "
            f"{vocab_size} and {multiple}"
        )
    padded = ((vocab_size + multiple - 1) // multiple) * multiple
    if padded != emb_rows:
        raise ConversionError(
            f"original config vocab_size={vocab_size} with pad_vocab_size_multiple={multiple} gives "
            f"{padded} rows but the embedding has {emb_rows}"
        )
    fields.update(vocab_size=vocab_size, pad_vocab_size_multiple=multiple)

    attn_layers = sorted(i for i in range(n_layer) if f"backbone.layers.{i}.mixer.Wqkv.weight" in canonical)
    if kwargs.get("attn_layer_idx") is not None:
        listed = kwargs["attn_layer_idx"]
        if not isinstance(listed, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in listed
        ):
            raise ConversionError(f"original config field attn_layer_idx must be a list of integers, got {listed!r}")
        _agree("attn_layer_idx", sorted(listed), attn_layers)
    if attn_layers:
        attn_cfg = _section(kwargs, "attn_cfg")
        if attn_cfg.get("causal", True) is not True:
            raise ConversionError("original attn_cfg.causal=False is not supported (a causal LM)")
        fields.update(
            attn_layer_idx=attn_layers,
            num_attention_heads=_number(attn_cfg, "num_heads", "attn_cfg.", integer=True),
            rotary_emb_dim=_number(attn_cfg, "rotary_emb_dim", "attn_cfg.", 0, integer=True),
        )
    mixer_layers = [i for i in range(n_layer) if i not in attn_layers]
    if not mixer_layers:
        raise ConversionError("every layer is an attention layer; nothing to convert into a Hyena model")
    first = f"backbone.layers.{mixer_layers[0]}.mixer."
    if family == "h3":
        fields.update(_h3_fields(kwargs, canonical, first))
    else:
        fields.update(_hyena_fields(kwargs, canonical, first, family, modulation_shift))
    try:
        return HyenaConfig(**fields)
    except ValueError as exc:
        raise ConversionError(f"original config is invalid: {exc}") from None


def _hyena_fields(kwargs, sd, prefix, family, modulation_shift) -> dict[str, Any]:
    layer = _section(kwargs, "layer")
    if layer.get("_name_", "hyena") != "hyena":
        raise ConversionError(f"original layer._name_={layer['_name_']!r} is not a Hyena operator")
    for key, supported in _UNSUPPORTED_HYENA.items():
        if key in layer and layer[key] != supported:
            raise ConversionError(f"original layer.{key}={layer[key]!r} is not supported (only {supported!r})")
    unknown = set(layer) - _IGNORED_HYENA - set(_UNSUPPORTED_HYENA)
    if unknown:
        raise ConversionError(f"unknown original layer fields: {sorted(unknown)}")
    d_model = _shape(sd, "backbone.embeddings.word_embeddings.weight")[1]
    in_rows = _shape(sd, prefix + "in_proj.weight")[0]
    filter_linears = sorted(
        int(k.split(".")[-2])
        for k in sd
        if k.startswith(prefix + "filter_fn.implicit_filter.") and k.endswith(".weight")
    )
    z_shape = _shape(sd, prefix + "filter_fn.pos_emb.z")
    if family == "hyenadna":
        # HyenaDNA's training code (which produced the released weights) uses shift 0.0; its standalone file 0.05.
        default_shift = 0.0
    else:
        default_shift = _number(layer, "shift", "layer.", 0.0)
    shift = (
        default_shift if modulation_shift is None else _number({"shift": modulation_shift}, "shift", "--modulation-")
    )
    return {
        "filter_type": "implicit",
        "hyena_order": _agree("layer.order", layer.get("order"), in_rows // d_model - 1),
        "short_filter_order": _agree(
            "layer.short_filter_order", layer.get("short_filter_order"), _shape(sd, prefix + "short_filter.weight")[-1]
        ),
        "filter_order": _agree(
            "layer.filter_order",
            layer.get("filter_order"),
            _shape(sd, prefix + "filter_fn.implicit_filter.0.weight")[0],
        ),
        "filter_emb_dim": _agree("layer.emb_dim", layer.get("emb_dim"), z_shape[-1]),
        "max_position_embeddings": _agree("layer.l_max", layer.get("l_max"), z_shape[1]),
        "filter_num_inner_mlps": _agree("layer.num_inner_mlps", layer.get("num_inner_mlps"), len(filter_linears) - 2),
        "filter_sin_freq": _number(layer, "w", "layer.", 1.0),
        "filter_use_bias": _flag(layer, "bias", "layer.", True),
        "train_pos_emb": _number(layer, "lr_pos_emb", "layer.", 1e-5) > 0,
        "modulate": _flag(layer, "modulate", "layer."),
        "modulation_shift": shift,
        "modulation_fast_decay_pct": _number(layer, "fast_decay_pct", "layer.", 0.3),
        "modulation_slow_decay_pct": _number(layer, "slow_decay_pct", "layer.", 1.5),
        "modulation_target": _number(layer, "target", "layer.", 1e-2),
        "hyena_dropout": _number(layer, "dropout", "layer.", 0.0),
    }


def _h3_fields(kwargs, sd, prefix) -> dict[str, Any]:
    ssm_cfg = _section(kwargs, "ssm_cfg")
    if ssm_cfg.get("mode", "diag") != "diag" or ssm_cfg.get("measure", "diag-lin") not in (
        "diag-lin",
        "diag-inv",
        "diag-legs",
        "diag",
    ):
        raise ConversionError(
            f"original ssm_cfg mode={ssm_cfg.get('mode')!r} measure={ssm_cfg.get('measure')!r} "
            "is not supported (only the diagonal S4D kernel of the released H3 models)"
        )
    if ssm_cfg.get("disc", "bilinear") != "bilinear" or ssm_cfg.get("head_dim", 1) != 1:
        raise ConversionError("only H3 with bilinear discretisation and head_dim=1 is supported")
    d_state = _shape(sd, prefix + "ssm_k_kernel.kernel.B")[-1]
    modes = _shape(sd, prefix + "kernel.kernel.inv_A_real")[-1]
    if 2 * modes != d_state:
        raise ConversionError(f"H3 diagonal SSM has {modes} modes but the shift SSM has d_state={d_state}")
    return {
        "filter_type": "h3",
        "ssm_state_size": _agree("ssm_cfg.d_state", ssm_cfg.get("d_state"), d_state),
        "max_position_embeddings": _number(kwargs, "max_position_embeddings", "", 2048, integer=True),
    }
