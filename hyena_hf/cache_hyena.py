"""Decoding state for Hyena-family models, in one transformers ``Cache`` object built from transformers' own cache
layers (``DynamicLayer`` for attention, ``LinearAttentionLayer`` for the convolution and SSM states, read and written
through ``update_conv_state`` / ``update_recurrent_state``), so the library's utilities (beam reordering, batch
selection and repetition, offloading, ``get_conv_state``) work as for Mamba.

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

import contextlib

import torch
from transformers.cache_utils import Cache, DynamicLayer, LinearAttentionLayer


class _HyenaStateLayer(LinearAttentionLayer):
    """transformers' linear-attention cache layer (conv and recurrent states, ``update_conv_state`` /
    ``update_recurrent_state``, beam reordering, offloading, reset) plus what generation's batch utilities need and
    the per-prefill ``step_params`` (what decoding reads from the weights: filters, poles, discretised SSM; no batch
    dimension, so reordering leaves it alone)."""

    def __init__(self, number_of_states: int = 1):
        super().__init__(number_of_states=number_of_states)
        self.step_params: tuple | None = None

    def _state_tensors(self):
        for states in (self.conv_states, self.recurrent_states):
            for i, tensor in states.items():
                if tensor is not None:
                    yield states, i, tensor

    def _map_states(self, fn) -> None:
        for states, i, tensor in list(self._state_tensors()):
            states[i] = fn(tensor)

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Every state ``(B, ...)`` -> ``(B * repeats, ...)``, each row repeated (beam search / sampling expansion)."""
        self._map_states(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the batch rows ``indices (B',)`` of every state ``(B, ...)``."""
        self._map_states(lambda t: t[indices])

    def reset(self) -> None:
        """Back to a new layer's state: the next forward is a prefill, of any batch size. (The library's reset zeroes
        the states in place for static addresses; these layers are not compiled, and a kept ``step_params`` would
        make the next call a decoding step.)"""
        for i in range(self.number_of_states):
            self.conv_states[i] = self.recurrent_states[i] = None
            self.is_conv_states_initialized[i] = self.is_recurrent_states_initialized[i] = False
            self.has_previous_state[i] = False
        self.step_params = None

    @property
    def batch_size(self) -> int:
        """B of the states, -1 before the prefill."""
        first = next(self._state_tensors(), None)
        return -1 if first is None else first[2].shape[0]

    def memory_bytes(self) -> int:
        """Bytes held by the states."""
        return sum(t.numel() * t.element_size() for _, _, t in self._state_tensors())


class HyenaConvState(_HyenaStateLayer):
    """Exact decoding of an implicit Hyena layer. Conv state 0: the short filter's window (the last
    ``short_filter_order - 1`` in-projection outputs); ``history[o]``: every input the long convolution of order step
    ``o`` has seen, grown by doubling (the exact convolution needs the whole past, which a fixed-size library state
    cannot hold)."""

    def __init__(self, num_steps: int):
        super().__init__(number_of_states=1)
        self.history: list[torch.Tensor | None] = [None] * num_steps
        self.lengths = [0] * num_steps

    @property
    def fir(self) -> torch.Tensor | None:
        """The short filter's window, the last inputs ``(B, (order + 1) d, short_filter_order - 1)`` (None before the
        prefill)."""
        return self.conv_states[0]

    def append(self, step: int, u: torch.Tensor) -> torch.Tensor:
        """Append ``u: (B, d, n)`` to order step ``step``; returns that step's whole history ``(B, d, T)``. The first
        append (a prefill's inputs) keeps ``u`` itself: a forward that never decodes holds T columns, not a copy."""
        buf, used, n = self.history[step], self.lengths[step], u.shape[-1]
        if buf is None:
            self.history[step], self.lengths[step] = u, n
            return u
        if used + n > buf.shape[-1]:  # growth doubles, which keeps the copies O(T) amortised
            grown = u.new_empty(*u.shape[:-1], max(2 * (used + n), 16))
            grown[..., :used] = buf[..., :used]
            buf = self.history[step] = grown
        buf[..., used : used + n] = u
        self.lengths[step] = used + n
        return buf[..., : used + n]

    def history_view(self, step: int) -> torch.Tensor:
        """Every input order step ``step`` has seen: ``(B, d, T)``."""
        return self.history[step][..., : self.lengths[step]]

    def _map_states(self, fn) -> None:
        super()._map_states(fn)
        self.history = [None if h is None else fn(h) for h in self.history]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep the batch rows ``beam_idx (B',)`` of every state and history, in that order (beam search)."""
        super().reorder_cache(beam_idx)
        self.history = [None if h is None else h.index_select(0, beam_idx.to(h.device)) for h in self.history]

    def offload(self):
        super().offload()
        self.history = [None if h is None else h.to("cpu", non_blocking=True) for h in self.history]

    def prefetch(self):
        super().prefetch()
        self.history = [None if h is None else h.to(self.device, non_blocking=True) for h in self.history]

    def reset(self) -> None:
        super().reset()
        self.history, self.lengths = [None] * len(self.history), [0] * len(self.history)

    def memory_bytes(self) -> int:
        return super().memory_bytes() + sum(h.numel() * h.element_size() for h in self.history if h is not None)

    @property
    def batch_size(self) -> int:
        size = super().batch_size
        return size if size >= 0 else next((h.shape[0] for h in self.history if h is not None), -1)


class H3State(_HyenaStateLayer):
    """H3 decoding. Conv state 0: the shift SSM's window, the last ``d_state`` keys ``(B, d, d_state)``; recurrent
    state 0: the diagonal SSM's complex state ``(B, d, d_state / 2)``."""

    @property
    def shift(self) -> torch.Tensor | None:
        """The last d_state keys ``(B, d, d_state)`` (None before the prefill)."""
        return self.conv_states[0]

    @property
    def ssm(self) -> torch.Tensor | None:
        """The diagonal SSM's complex state ``(B, d, d_state / 2)`` (None before the prefill)."""
        return self.recurrent_states[0]


class ModalState(_HyenaStateLayer):
    """Modal (recurrent) decoding. Conv state 0: the short filter's window as for :class:`HyenaConvState`; recurrent
    state ``o``: the complex state ``(B, d, modal_state_size)`` of order step ``o``."""

    def __init__(self, num_steps: int):
        super().__init__(number_of_states=num_steps)

    @property
    def fir(self) -> torch.Tensor | None:
        """The short filter's window ``(B, (order + 1) d, short_filter_order - 1)`` (None before the prefill), as
        :attr:`HyenaConvState.fir`."""
        return self.conv_states[0]

    @property
    def ssm(self) -> list[torch.Tensor | None]:
        """The complex state ``(B, d, modal_state_size)`` of each order step."""
        return [self.recurrent_states[o] for o in range(self.number_of_states)]


# The config fields that shape the decoding states: a cache fits a model only where all of them agree.
STATE_FIELDS = (
    "mixer_types",
    "hidden_size",
    "hyena_order",
    "short_filter_order",
    "ssm_state_size",
    "modal_state_size",
    "num_attention_heads",
)


def state_layout(config) -> dict:
    """The values of :data:`STATE_FIELDS` in ``config``."""
    return {name: getattr(config, name) for name in STATE_FIELDS}


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
        self.layout = state_layout(config)  # what the layers were built for (checked against the model)
        self.seen_tokens = 0
        self.incomplete = False  # a forward raised part-way through filling it (see filled_by_forward)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.seen_tokens + query_length, 0

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return self.seen_tokens > 0

    def reset(self) -> None:
        """Every layer back to its new state: the next forward starts a new sequence (any batch size)."""
        super().reset()
        self.seen_tokens = 0
        self.incomplete = False

    @property
    def batch_size(self) -> int:
        """The rows B of the stored states (attention KV included), -1 while nothing is stored."""
        for layer in self.layers:
            if isinstance(layer, DynamicLayer):
                size = layer.keys.shape[0] if layer.is_initialized else -1
            else:
                size = layer.batch_size
            if size >= 0:
                return size
        return -1

    @property
    def is_croppable(self) -> bool:
        """Only a cache of attention layers alone: the convolution and SSM states hold no per-token past to roll
        back to."""
        return all(isinstance(layer, DynamicLayer) for layer in self.layers)

    def crop(self, tokens_to_remove: int) -> None:
        """transformers' crop (a negative ``tokens_to_remove`` removes that many tokens), for attention-only models;
        other models get a one-line error before any layer changes."""
        if not self.is_croppable:
            raise ValueError(
                "HyenaCache cannot be cropped: its convolution / SSM states hold no per-token past to roll back to "
                "(run the prefill again on the shorter prefix)"
            )
        super().crop(tokens_to_remove)
        self.seen_tokens = self.layers[0].get_seq_length() if self.layers else 0

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


@contextlib.contextmanager
def filled_by_forward(cache: HyenaCache | None):
    """The context of a forward that writes the new tokens into ``cache`` layer by layer: where it raises part-way
    (out of memory, an interrupt, a hook's error), some layers hold the new tokens and others do not, so the cache
    is marked :attr:`~HyenaCache.incomplete` and refused by the next forward (a continuation would silently be
    wrong) until :meth:`~HyenaCache.reset`."""
    try:
        yield
    except BaseException:
        if cache is not None:
            cache.incomplete = True
        raise
