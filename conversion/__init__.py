"""Converters for the original Hyena-family checkpoints (installed as ``hyena_hf.conversion``)."""

from .checkpoint_io import ConversionError, extract_state_dict, load_checkpoint
from .convert import FORMATS, convert_checkpoint, convert_state_dict, detect_format, read_original_config

__all__ = [
    "ConversionError",
    "FORMATS",
    "convert_checkpoint",
    "convert_state_dict",
    "detect_format",
    "extract_state_dict",
    "load_checkpoint",
    "read_original_config",
]
