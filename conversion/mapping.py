"""The one mapping helper every source format uses: original key names -> hyena_hf key names, with checks.

Each format first normalises its keys to the canonical layout of the original LM classes
(``backbone.embeddings.word_embeddings.weight``, ``backbone.layers.N.mixer.*``, ``backbone.ln_f.*``, ``lm_head.weight``;
safari/HyenaDNA ``ConvLMHeadModel`` and H3 ``SSMLMHeadModel`` share it); this module maps that layout onto
``HyenaForCausalLM`` and verifies that every tensor is used, present and of the right shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from .checkpoint_io import ConversionError

Transform = Callable[[torch.Tensor], torch.Tensor]

_squeeze_channel: Transform = lambda t: t.squeeze(0)  # (1, H, ...) channel dim of the original SSM kernels

# (pattern on the canonical original key, replacement, optional tensor transform)
RULES: list[tuple[str, str, Transform | None]] = [
    (r"backbone\.embeddings\.word_embeddings\.weight", "backbone.embeddings.weight", None),
    (r"backbone\.ln_f\.(weight|bias)", r"backbone.norm_f.\1", None),
    (r"backbone\.layers\.(\d+)\.(norm1|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)", r"backbone.layers.\1.\2.\3", None),
    # attention
    (r"backbone\.layers\.(\d+)\.mixer\.Wqkv\.(weight|bias)", r"backbone.layers.\1.mixer.qkv_proj.\2", None),
    # hyena operator
    (
        r"backbone\.layers\.(\d+)\.mixer\.(in_proj|out_proj|short_filter)\.(weight|bias)",
        r"backbone.layers.\1.mixer.\2.\3",
        None,
    ),
    (r"backbone\.layers\.(\d+)\.mixer\.filter_fn\.bias", r"backbone.layers.\1.mixer.filter.D", None),
    (r"backbone\.layers\.(\d+)\.mixer\.filter_fn\.pos_emb\.(z|t)", r"backbone.layers.\1.mixer.filter.\2", None),
    (r"backbone\.layers\.(\d+)\.mixer\.filter_fn\.modulation\.deltas", r"backbone.layers.\1.mixer.filter.deltas", None),
    (
        r"backbone\.layers\.(\d+)\.mixer\.filter_fn\.implicit_filter\.\d+\.freq",
        r"backbone.layers.\1.mixer.filter.sin_freq",
        None,
    ),
    # implicit_filter.{2i}.weight/bias are renamed by _rename_filter_mlp before the rules run
    (
        r"backbone\.layers\.(\d+)\.mixer\.filter_fn\.(mlp\.\d+|out)\.(weight|bias)",
        r"backbone.layers.\1.mixer.filter.\2.\3",
        None,
    ),
    # H3
    (r"backbone\.layers\.(\d+)\.mixer\.(q_proj|k_proj|v_proj)\.(weight|bias)", r"backbone.layers.\1.mixer.\2.\3", None),
    (r"backbone\.layers\.(\d+)\.mixer\.output_linear\.(weight|bias)", r"backbone.layers.\1.mixer.out_proj.\2", None),
    (r"backbone\.layers\.(\d+)\.mixer\.ssm_k_kernel\.kernel\.B", r"backbone.layers.\1.mixer.shift_B", None),
    (r"backbone\.layers\.(\d+)\.mixer\.ssm_k_kernel\.kernel\.C", r"backbone.layers.\1.mixer.shift_C", _squeeze_channel),
    (r"backbone\.layers\.(\d+)\.mixer\.ssm_k_D", r"backbone.layers.\1.mixer.shift_D", None),
    (
        r"backbone\.layers\.(\d+)\.mixer\.kernel\.kernel\.(log_dt|inv_A_real|A_imag|B)",
        r"backbone.layers.\1.mixer.ssm_\2",
        None,
    ),
    (r"backbone\.layers\.(\d+)\.mixer\.kernel\.kernel\.C", r"backbone.layers.\1.mixer.ssm_C", _squeeze_channel),
    (r"backbone\.layers\.(\d+)\.mixer\.D", r"backbone.layers.\1.mixer.D", None),
    (r"lm_head\.weight", "lm_head.weight", None),
]
_COMPILED = [(re.compile(p + r"\Z"), r, t) for p, r, t in RULES]

_FILTER_LINEAR = re.compile(r"(backbone\.layers\.\d+\.mixer\.filter_fn\.)implicit_filter\.(\d+)\.(weight|bias)\Z")


def _rename_filter_mlp(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """implicit_filter.{0,2,4,...}: Linear layers (Sin modules in between); the last Linear is the output layer."""
    linear_indices: dict[str, set[int]] = {}
    for key in state_dict:
        m = _FILTER_LINEAR.match(key)
        if m:
            linear_indices.setdefault(m.group(1), set()).add(int(m.group(2)))
    renamed = {}
    for key, value in state_dict.items():
        m = _FILTER_LINEAR.match(key)
        if m:
            ordered = sorted(linear_indices[m.group(1)])
            rank = ordered.index(int(m.group(2)))
            name = "out" if rank == len(ordered) - 1 else f"mlp.{rank}"
            key = f"{m.group(1)}{name}.{m.group(3)}"
        renamed[key] = value
    return renamed


def _few(keys, n: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def map_state_dict(
    canonical: dict[str, torch.Tensor], expected: dict[str, torch.Size], optional: set[str] = frozenset()
) -> dict[str, torch.Tensor]:
    """Rename canonical original keys to hyena_hf keys; raise on unexpected / missing keys and shape mismatches.

    ``expected``: hyena_hf key -> shape (from the model built for the target config). Tied copies (``lm_head``,
    the shared Sin frequency) must hold identical values.
    """
    canonical = _rename_filter_mlp(canonical)
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in canonical.items():
        for pattern, replacement, transform in _COMPILED:
            if pattern.match(key):
                new_key = pattern.sub(replacement, key)
                if transform is not None:
                    tensor = transform(tensor)
                if new_key in mapped and not torch.equal(mapped[new_key], tensor):
                    raise ConversionError(
                        f"tensors mapped to {new_key} differ although the original shares them (last one: {key})"
                    )
                mapped[new_key] = tensor
                break
        else:
            unexpected.append(key)
    if unexpected:
        raise ConversionError(f"unexpected keys for this format: {_few(unexpected)}")
    emb = mapped.get("backbone.embeddings.weight")
    if "lm_head.weight" in mapped and emb is not None and not torch.equal(mapped["lm_head.weight"], emb):
        raise ConversionError("lm_head.weight differs from the word embeddings, but the original ties them")
    if emb is not None:  # tied head stored once (or not at all) in the original
        mapped.setdefault("lm_head.weight", emb)
    missing = [k for k in expected if k not in mapped and k not in optional]
    if missing:
        raise ConversionError(f"missing keys: {_few(missing)}")
    extra = [k for k in mapped if k not in expected]
    if extra:
        raise ConversionError(f"unexpected keys for the inferred config: {_few(extra)}")
    for key, shape in expected.items():
        if key in mapped and tuple(mapped[key].shape) != tuple(shape):
            raise ConversionError(
                f"shape mismatch for {key}: expected {tuple(shape)}, found {tuple(mapped[key].shape)}"
            )
    return mapped


def count_layers(keys) -> int:
    layers = {int(m.group(1)) for k in keys if (m := re.match(r"backbone\.layers\.(\d+)\.", k))}
    if not layers:
        raise ConversionError("no backbone.layers.N.* keys found")
    if layers != set(range(max(layers) + 1)):
        raise ConversionError(f"layer indices are not contiguous: {sorted(layers)}")
    return max(layers) + 1
