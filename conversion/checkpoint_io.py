"""Reading original checkpoints safely: nothing from a pickle is ever executed.

* safetensors files are read with safetensors.
* Plain state dicts load with ``torch.load(weights_only=True)``.
* Lightning checkpoints (pickled omegaconf objects, optimizer state, callbacks) go through a restricted unpickler that
  rebuilds tensors and plain containers only; every other class or callable named in the pickle (omegaconf, a
  malicious ``os.system`` from a ``__reduce__`` payload, ...) is replaced by an inert placeholder, so it is never
  imported and never called.
"""

from __future__ import annotations

import pickle
import types
import zipfile
from pathlib import Path

import torch


class ConversionError(ValueError):
    """A checkpoint or config cannot be converted; the message names the cause in one line."""


class InertObject:
    """Stands in for any class the restricted unpickler refuses to import; accepts and ignores everything."""

    __slots__ = ("qualified_name",)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def __repr__(self):
        return "<skipped object>"


def _placeholder(module: str, name: str) -> type:
    # A fresh subclass per refused global, so the skipped object's origin stays visible for debugging.
    return type(f"Skipped[{module}.{name}]", (InertObject,), {"__slots__": ()})


def _allowed_globals() -> dict[str, object]:
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = dict(_get_allowed_globals())
    allowed["collections.OrderedDict"] = __import__("collections").OrderedDict
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        obj = _allowed_globals().get(f"{module}.{name}")
        if obj is not None:
            return obj
        return _placeholder(module, name)


# torch.load subclasses ``pickle_module.Unpickler`` (adding persistent_load for the storages).
restricted_pickle_module = types.ModuleType("hyena_hf_restricted_pickle")
restricted_pickle_module.Unpickler = _RestrictedUnpickler
restricted_pickle_module.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()
restricted_pickle_module.__name__ = "hyena_hf_restricted_pickle"


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file into a dict of tensors / plain containers without running code from it."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint file not found: {path}")
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ConversionError(f"truncated or corrupt safetensors file {path}: {exc}") from None
    if path.stat().st_size == 0:
        raise ConversionError(f"truncated or corrupt checkpoint file {path}: file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc) and "Unsupported global" not in str(exc):
            raise ConversionError(f"truncated or corrupt checkpoint file {path}: {str(exc).splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ConversionError(f"truncated or corrupt checkpoint file {path}: {str(exc).splitlines()[0]}") from None
    # Objects other than tensors are present (Lightning's omegaconf hyper-parameters, ...): read with placeholders.
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle_module)
    except Exception as exc:
        raise ConversionError(f"truncated or corrupt checkpoint file {path}: {str(exc).splitlines()[0]}") from None


def extract_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The model tensors of a plain state dict or of a Lightning checkpoint (``state_dict`` entry)."""
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"checkpoint holds a {type(checkpoint).__name__}, not a state dict")
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], dict):
        checkpoint = checkpoint["state_dict"]
    state_dict = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not state_dict:
        raise ConversionError("checkpoint contains no tensors (expected a state dict or a Lightning checkpoint)")
    return state_dict
