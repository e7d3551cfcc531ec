"""Decoding state for Hyena-family models, in one transformers ``Cache`` object.

Per layer (``config.layer_types``):

* attention layers: transformers' ``DynamicLayer`` (keys/values, ``(B, heads, T, head_dim)`` each);
* implicit Hyena layers, :class:`HyenaConvState` (exact decoding):
  ``fir``: the last ``short_filter_order - 1`` in-projection outputs, ``(B, (order+1)·d, short_filter_order-1)``;
  ``history[o]``: every input seen by the long convolution of order step ``o``, ``(B, d, T)`` (stored with
  capacity doubling). A new token costs O(T·d) per step instead of an O(T log T · d) re-run of the FFT convolution,
  and gives the same numbers as the full forward (it is the same convolution sum);
* H3 layers, :class:`H3State`: ``shift``: the last ``d_state`` keys ``(B, d, d_state)`` (the shift SSM is an FIR
  filter); ``ssm``: the diagonal SSM's complex state ``(B, d, d_state/2)``. Cost per token independent of T.
* modal layers, :class:`ModalState`: ``fir`` as for Hyena, ``ssm[o]``: complex state ``(B, d, modal_state_size)``
  per order step. Cost per token independent of T.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


def _select(tensor: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if tensor is None else tensor.index_select(0, index.to(tensor.device))


class _StateLayer:
    """Base of our per-layer states: batch-dimension bookkeeping shared by all of them."""

    tensor_names: tuple[str, ...] = ()
    # What the decode step needs from the weights (filters, poles, discretised SSM), computed once at prefill.
    # It has no batch dimension, so beam reordering leaves it alone.
    step_params: tuple | None = None

    def _tensors(self):
        for name in self.tensor_names:
            value = getattr(self, name)
            if isinstance(value, list):
                yield from (v for v in value if v is not None)
            elif value is not None:
                yield value

    def _map(self, fn) -> None:
        for name in self.tensor_names:
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, [None if v is None else fn(v) for v in value])
            elif value is not None:
                setattr(self, name, fn(value))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map(lambda t: _select(t, beam_idx))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map(lambda t: t[indices])

    def reset(self) -> None:
        self._map(torch.zeros_like)

    def crop(self, tokens_to_remove: int) -> None:
        raise RuntimeError(f"{type(self).__name__} cannot be cropped (its state summarises the past)")

    def offload(self):
        self._map(lambda t: t.to("cpu", non_blocking=True))

    def prefetch(self):
        pass

    @property
    def is_initialized(self) -> bool:
        return any(True for _ in self._tensors())

    @property
    def batch_size(self) -> int:
        first = next(self._tensors(), None)
        return -1 if first is None else first.shape[0]

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors())


class HyenaConvState(_StateLayer):
    tensor_names = ("fir", "history")

    def __init__(self, num_steps: int):
        self.fir: torch.Tensor | None = None
        self.history: list[torch.Tensor | None] = [None] * num_steps
        self.lengths = [0] * num_steps

    def append(self, step: int, u: torch.Tensor) -> torch.Tensor:
        """Append ``u: (B, d, n)`` to order step ``step``; returns that step's whole history ``(B, d, T)``."""
        buf, used, n = self.history[step], self.lengths[step], u.shape[-1]
        if buf is None or used + n > buf.shape[-1]:
            grown = u.new_zeros(*u.shape[:-1], max(2 * (used + n), 16))  # capacity doubling: O(T) amortised
            if buf is not None:
                grown[..., :used] = buf[..., :used]
            buf = self.history[step] = grown
        buf[..., used : used + n] = u
        self.lengths[step] = used + n
        return buf[..., : used + n]

    def history_view(self, step: int) -> torch.Tensor:
        return self.history[step][..., : self.lengths[step]]

    def reset(self) -> None:
        super().reset()
        self.lengths = [0] * len(self.history)


class H3State(_StateLayer):
    tensor_names = ("shift", "ssm")

    def __init__(self):
        self.shift: torch.Tensor | None = None
        self.ssm: torch.Tensor | None = None


class ModalState(_StateLayer):
    tensor_names = ("fir", "ssm")

    def __init__(self, num_steps: int):
        self.fir: torch.Tensor | None = None
        self.ssm: list[torch.Tensor | None] = [None] * num_steps


class HyenaCache(Cache):
    """One cache for a whole Hyena-family model (long-convolution states and attention KV caches)."""

    def __init__(self, config):
        layers = []
        for mixer in config.mixer_types:
            if mixer == "attention":
                layers.append(DynamicLayer())
            elif mixer == "h3":
                layers.append(H3State())
            elif mixer == "modal":
                layers.append(ModalState(config.hyena_order - 1))
            else:
                layers.append(HyenaConvState(config.hyena_order - 1))
        super().__init__(layers=layers)
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        return self.seen_tokens + query_length, 0

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return self.seen_tokens > 0

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def is_sliding(self) -> list[bool]:
        return [False] * len(self.layers)

    @property
    def is_linear(self) -> list[bool]:
        return [not isinstance(layer, DynamicLayer) for layer in self.layers]

    def memory_bytes(self) -> list[int]:
        """Bytes held per layer."""
        out = []
        for layer in self.layers:
            if isinstance(layer, DynamicLayer):
                out.append(
                    sum(t.numel() * t.element_size() for t in (layer.keys, layer.values) if isinstance(t, torch.Tensor))
                )
            else:
                out.append(layer.memory_bytes())
        return out
