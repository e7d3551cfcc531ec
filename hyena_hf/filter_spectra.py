"""Filter spectra kept from one CPU inference forward to the next at the same length.

A Hyena mixer's long convolutions multiply each input's spectrum by its filter's, and the filters depend only on the
weights and the length: recomputing them (the implicit filter's MLP, its decay, one real FFT per filter) took 7-18 %
of a CPU forward (2K-32K tokens, width 256, 4 layers; benchmarks/bench_floor.py and bench_model.py time both).
When a filter meets the same length a second time in a row, the CPU engine
(:func:`hyena_hf.ops_cpu.hyena_mixer_in_channel_blocks`) keeps the spectra it computes and later forwards at that
length read them.

Kept spectra are only read while everything the filters are computed from is bit for bit what it was: every parameter
and buffer of the filter module (the positional ones up to the length) is compared with a copy taken when the length
was first seen, so an optimizer step, ``load_state_dict``, ``.data`` edits or a new dtype or device all recompute
them. Spectra take 8 bytes per channel and FFT point (twice the length) in float32: memory on top of the model, up to
``MAX_BYTES`` in the whole process (0 keeps none); an entry goes with its module, or with :func:`release`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from itertools import chain

import torch
from torch import nn

MAX_BYTES = 256 << 20
POSITIONAL = ("z", "t")  # the implicit filter's buffers indexed by position (dim 1): only the first `seqlen` matter
CONFIG_FIELDS = ("modulate", "modulation_shift", "filter_use_bias", "filter_type")  # read by the filters at each call


@dataclass
class _Entry:
    """What a filter's kept spectra were computed from, and the spectra once the length came twice in a row."""

    key: tuple
    inputs: list[torch.Tensor]
    spectra: torch.Tensor | None = None

    def nbytes(self) -> int:
        tensors = self.inputs + ([] if self.spectra is None else [self.spectra])
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class SpectraPlan:
    """The spectra of one forward: ``ready`` ones to read, or fresh ones to fill and :func:`keep_spectra`."""

    spectra: torch.Tensor
    ready: bool
    _entry: _Entry = field(repr=False)


_kept: weakref.WeakKeyDictionary[nn.Module, _Entry] = weakref.WeakKeyDictionary()


def _filter_inputs(filter_module: nn.Module, seqlen: int) -> list[torch.Tensor]:
    tensors = chain(filter_module.named_parameters(), filter_module.named_buffers())
    return [t[:, :seqlen] if name in POSITIONAL else t for name, t in tensors]


def _same(kept: list[torch.Tensor], current: list[torch.Tensor]) -> bool:
    return len(kept) == len(current) and all(
        a.dtype == b.dtype and a.device == b.device and torch.equal(a, b) for a, b in zip(kept, current)
    )


def kept_bytes(model: nn.Module | None = None) -> int:
    """Bytes held by kept spectra and the copies they are checked against: of ``model``'s filters, or of every live
    model (None)."""
    if model is None:
        return sum(entry.nbytes() for entry in list(_kept.values()))
    return sum(_kept[module].nbytes() for module in model.modules() if module in _kept)


def release(model: nn.Module | None = None) -> None:
    """Drop the kept spectra (and the copies they are checked against) of ``model``'s filters, or of every model
    (None); later forwards keep them again from the second at a length (``MAX_BYTES = 0`` keeps none)."""
    for module in list(_kept.keys()) if model is None else list(model.modules()):
        _kept.pop(module, None)


def spectra_plan(filter_module: nn.Module, seqlen: int, shape: tuple, dtype: torch.dtype) -> SpectraPlan | None:
    """Spectra ``shape`` (e.g. ``(order - 1, d, fft_points // 2 + 1)``) of complex ``dtype`` for the filters of
    ``filter_module`` at ``seqlen``: kept ones (``ready``), fresh ones to fill and :func:`keep_spectra` when this length
    comes for the second time in a row, or None (first time, budget spent, or under torch.compile)."""
    spectra_bytes = torch.Size(shape).numel() * dtype.itemsize
    if spectra_bytes > MAX_BYTES or torch.compiler.is_compiling():
        return None
    config = filter_module.config
    key = (seqlen, tuple(shape), dtype, *(getattr(config, name, None) for name in CONFIG_FIELDS))
    inputs = _filter_inputs(filter_module, seqlen)
    entry = _kept.get(filter_module)
    if entry is None or entry.key != key or not _same(entry.inputs, inputs):
        _kept[filter_module] = _Entry(key, [t.detach().clone() for t in inputs])
        return None
    if entry.spectra is not None:
        return SpectraPlan(entry.spectra, True, entry)
    if kept_bytes() + spectra_bytes > MAX_BYTES:
        return None
    return SpectraPlan(torch.empty(shape, dtype=dtype, device=inputs[0].device), False, entry)


def keep_spectra(filter_module: nn.Module, filled: SpectraPlan) -> None:
    """Keep the spectra of a plan that were filled by the forward that asked for it."""
    if not filled.ready and _kept.get(filter_module) is filled._entry:
        filled._entry.spectra = filled.spectra
