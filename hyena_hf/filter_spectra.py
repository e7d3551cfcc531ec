"""Filter spectra kept from one CPU inference forward to the next at the same length.

A Hyena mixer's long convolutions multiply each input's spectrum by its filter's, and the filters depend only on the
weights and the length: recomputing them (the implicit filter's MLP, its decay, one real FFT per filter) took 7-18 %
of a CPU forward (2K-32K tokens, width 256, 4 layers; benchmarks/bench_floor.py and bench_model.py time both).
When a filter meets the same length a second time in a row, the CPU engine
(:func:`hyena_hf.ops_cpu.hyena_mixer_in_channel_blocks`) keeps the spectra it computes and later forwards at that
length read them; the backbone engine does the same for H3's two SSM kernels (:mod:`hyena_hf.cpu_backbone`).

Kept spectra are only read while everything the filters are computed from is bit for bit what it was: every parameter
and buffer of the filter module (the positional ones up to the length; an H3 mixer's SSM parameters) is compared
with a copy taken when the length was first seen, so an optimizer step, ``load_state_dict``, ``.data`` edits or a new
dtype or device all recompute them. Spectra take 8 bytes per channel and FFT point (twice the length) in float32:
memory on top of the model, up to ``MAX_BYTES`` in the whole process (0 keeps none); an entry goes with its module,
or with :func:`release`.
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
    """What a module's kept spectra were computed from, and the spectra once the length came twice in a row."""

    key: tuple
    inputs: list[torch.Tensor]
    spectra: list[torch.Tensor] | None = None

    def nbytes(self) -> int:
        tensors = self.inputs + (self.spectra or [])
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class SpectraPlan:
    """The spectra of one forward: ``ready`` ones to read, or fresh ones to fill and :func:`keep_spectra`."""

    spectra: list[torch.Tensor]
    ready: bool
    _entry: _Entry = field(repr=False)


_kept: weakref.WeakKeyDictionary[nn.Module, _Entry] = weakref.WeakKeyDictionary()


def filter_inputs(module: nn.Module, seqlen: int, recurse: bool = True) -> list[torch.Tensor]:
    """What ``module``'s filters at ``seqlen`` are computed from: its parameters and buffers (of its submodules too
    with ``recurse``), the positional ones up to ``seqlen``."""
    tensors = chain(module.named_parameters(recurse=recurse), module.named_buffers(recurse=recurse))
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


def spectra_plan(
    module: nn.Module, seqlen: int, shapes: list[tuple], dtype: torch.dtype, inputs: list[torch.Tensor] | None = None
) -> SpectraPlan | None:
    """Spectra of ``shapes`` (e.g. ``(d, fft_points // 2 + 1)`` per convolution) and complex ``dtype`` for the
    filters ``module`` computes at ``seqlen`` from ``inputs`` (None: :func:`filter_inputs`): kept ones (``ready``),
    fresh ones to fill and :func:`keep_spectra` when this length comes for the second time in a row, or None (first
    time, budget spent, or under torch.compile)."""
    spectra_bytes = sum(torch.Size(shape).numel() for shape in shapes) * dtype.itemsize
    if spectra_bytes > MAX_BYTES or torch.compiler.is_compiling():
        return None
    config = module.config
    key = (seqlen, tuple(map(tuple, shapes)), dtype, *(getattr(config, name, None) for name in CONFIG_FIELDS))
    inputs = filter_inputs(module, seqlen) if inputs is None else inputs
    entry = _kept.get(module)
    if entry is None or entry.key != key or not _same(entry.inputs, inputs):
        _kept[module] = _Entry(key, [t.detach().clone() for t in inputs])
        return None
    if entry.spectra is not None:
        return SpectraPlan(entry.spectra, True, entry)
    if kept_bytes() + spectra_bytes > MAX_BYTES:
        return None
    return SpectraPlan([torch.empty(shape, dtype=dtype, device=inputs[0].device) for shape in shapes], False, entry)


def keep_spectra(module: nn.Module, filled: SpectraPlan) -> None:
    """Keep the spectra of a plan that were filled by the forward that asked for it."""
    if not filled.ready and _kept.get(module) is filled._entry:
        filled._entry.spectra = filled.spectra
