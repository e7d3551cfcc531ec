"""Python API: original checkpoint (+ original config) -> HyenaForCausalLM."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hyena_hf.configuration_hyena import HyenaConfig
from hyena_hf.modeling_hyena import HyenaForCausalLM

from . import h3, hyenadna, safari
from .checkpoint_io import ConversionError, extract_state_dict, load_checkpoint
from .mapping import map_state_dict
from .original_config import config_from_original

FORMATS = ("safari", "hyenadna", "hyenadna-hf", "h3")
_CANONICALIZE = {
    "safari": safari.canonicalize,
    "hyenadna": hyenadna.canonicalize,
    "hyenadna-hf": hyenadna.canonicalize_hf,
    "h3": h3.canonicalize,
}
_FAMILY = {"safari": safari.FAMILY, "hyenadna": hyenadna.FAMILY, "hyenadna-hf": hyenadna.FAMILY, "h3": h3.FAMILY}


def detect_format(state_dict: dict[str, torch.Tensor]) -> str:
    keys = set(state_dict)
    if hyenadna.detect_hf(keys):
        return "hyenadna-hf"
    if h3.detect(keys):
        return "h3"
    if hyenadna.detect(keys):
        return "hyenadna"
    if safari.detect(keys):
        return "safari"
    raise ConversionError(f"unknown checkpoint format (first keys: {sorted(keys)[:3]})")


def read_original_config(path: str | Path) -> dict:
    """Original constructor fields from a JSON or YAML file.

    Accepts HyenaDNA's ``config.json`` (fields at top level), the -hf twins' ``config.json`` (``model_type:
    hyenadna``), a fixture ``meta.json`` (``model_kwargs``), and safari / H3 experiment YAMLs (``model:`` section).
    """
    path = Path(path)
    try:
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # OSError, UnicodeDecodeError, JSON / YAML syntax errors
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"original config {path} cannot be read: {message}") from None
    if not isinstance(data, dict):
        raise ConversionError(f"original config {path} does not hold a mapping")
    if data.get("model_type") == "hyenadna":  # the -hf twins' transformers config
        return hyenadna.original_kwargs_from_hf_config(data)
    if isinstance(data.get("model_kwargs"), dict):
        data = data["model_kwargs"]
    elif isinstance(data.get("model"), dict) and "d_model" in data["model"]:
        data = data["model"]
    data = {k: v for k, v in data.items() if k not in ("_name_", "_target_")}
    return data


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], original_config: dict, fmt: str = "auto", modulation_shift: float | None = None
) -> HyenaForCausalLM:
    """Build a HyenaForCausalLM holding the original weights (float32 or as stored)."""
    if fmt == "auto":
        fmt = detect_format(state_dict)
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    canonical = _CANONICALIZE[fmt](state_dict)
    config: HyenaConfig = config_from_original(original_config, canonical, _FAMILY[fmt], modulation_shift)
    model = HyenaForCausalLM(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    mapped = map_state_dict(canonical, expected)
    model.load_state_dict(mapped, strict=True)
    model.tie_weights()
    return model.eval()


def convert_checkpoint(
    path: str | Path, original_config: dict | str | Path, fmt: str = "auto", modulation_shift: float | None = None
) -> HyenaForCausalLM:
    if not isinstance(original_config, dict):
        original_config = read_original_config(original_config)
    state_dict = extract_state_dict(load_checkpoint(path))
    return convert_state_dict(state_dict, original_config, fmt, modulation_shift)
