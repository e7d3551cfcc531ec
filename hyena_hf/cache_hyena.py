"""Decoding state for Hyena-family models, in one transformers ``Cache`` object built from transformers' own cache
layers (``DynamicLayer`` for attention, ``LinearAttentionLayer`` for the convolution and SSM states, read and written
through ``update_conv_state`` / ``update_recurrent_state``), so the library's utilities (beam reordering, batch
selection and repetition, offloading, ``get_conv_state``) work as for Mamba. The model builds a :class:`HyenaCache`;
transformers' ``DynamicCache`` serves as well (:func:`take_over` puts these layers into it).

Per layer (``config.layer_types``):

* attention layers: transformers' ``DynamicLayer`` (keys/values, ``(B, heads, T, head_dim)`` each);
* implicit Hyena layers, :class:`HyenaConvState` (exact decoding):
  ``fir``: the last ``short_filter_order - 1`` in-projection outputs, ``(B, (order+1)·d, short_filter_order-1)``;
  ``history[o]``: every input seen by the long convolution of order step ``o``, ``(B, d, T)`` (stored with
  capacity doubling); ``pending[o]``: at long contexts, a window of W outputs ``(B, d, W)`` that the inputs seen so
  far have contributed to (relaxed decoding, :mod:`hyena_hf.decoding`). A new token costs O(T·d) per step (the sum
  over the history) or O(d log² T) amortised (relaxed) instead of an O(T log T · d) re-run of the FFT convolution,
  and gives the same numbers as the full forward (the same convolution);
* H3 layers, :class:`H3State`: ``shift``: the last ``d_state`` keys ``(B, d, d_state)`` (the shift SSM is an FIR
  filter); ``ssm``: the diagonal SSM's complex state ``(B, d, d_state/2)``. Cost per token independent of T.
* modal layers, :class:`ModalState`: ``fir`` as for Hyena, ``ssm[o]``: complex state ``(B, d, modal_state_size)``
  per order step. Cost per token independent of T.
"""

from __future__ import annotations

import contextlib

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache, DynamicLayer, LinearAttentionLayer


class _HyenaStateLayer(LinearAttentionLayer, CacheLayerMixin):
    """transformers' linear-attention cache layer (conv and recurrent states, ``update_conv_state`` /
    ``update_recurrent_state``, beam reordering, offloading, reset) plus what generation's batch utilities need and
    the per-prefill ``step_params`` (what decoding reads from the weights: filters, poles, discretised SSM; no batch
    dimension, so reordering leaves it alone).

    It also counts the tokens it has taken in and answers ``get_seq_length`` as an attention layer does: transformers'
    ``DynamicCache`` reads a cache's length from its first such layer, and generate asks a cache for its length
    before the prefill (Mamba avoids the question by its class name)."""

    is_compileable = False  # a growing history and per-prefill parameters outside the tensors
    is_croppable = False

    def __init__(self, number_of_states: int = 1):
        CacheLayerMixin.__init__(self)  # keys / values stay None: no attention states here
        LinearAttentionLayer.__init__(self, number_of_states=number_of_states)
        self.step_params: tuple | None = None
        self.seen_tokens = 0
        self.incomplete = False  # a forward raised part-way through filling its cache (see filled_by_forward)
        self.layout: dict | None = None  # the model's state_layout, set by state_layers

    def get_seq_length(self) -> int:
        """Tokens of the sequence taken in so far."""
        return self.seen_tokens

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(kv_length, kv_offset) as an attention layer of the same cache would report them."""
        return self.seen_tokens + query_length, 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} holds convolution / SSM states, not attention keys and values")

    def crop(self, tokens_to_remove: int) -> None:
        """Refused: convolution and SSM states hold no per-token past. A cache whose crop got here may already have
        cropped its attention layers, so the layer is marked incomplete (refused until ``reset``)."""
        self.incomplete = True
        raise ValueError(
            "a Hyena cache layer cannot be cropped: its convolution / SSM states hold no per-token past to roll back "
            "to; the cache must be reset() (run the prefill again on the shorter prefix)"
        )

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
        self.seen_tokens = 0
        self.incomplete = False

    def _row_tensors(self) -> list[torch.Tensor]:
        """Every stored tensor with a batch dimension first (subclasses add theirs)."""
        return [tensor for *_, tensor in self._state_tensors()]

    @property
    def batch_size(self) -> int:
        """B of the states, -1 before the prefill. (Subclasses extend ``_row_tensors``, not this property: Dynamo
        cannot resolve a property read through ``super()``, a graph break in every decoding step.)"""
        rows = self._row_tensors()
        return rows[0].shape[0] if rows else -1

    def memory_bytes(self) -> int:
        """Bytes held by the states."""
        return sum(t.numel() * t.element_size() for t in self._row_tensors())


class HyenaConvState(_HyenaStateLayer):
    """Exact decoding of an implicit Hyena layer. Conv state 0: the short filter's window (the last
    ``short_filter_order - 1`` in-projection outputs); ``history[o]``: every input the long convolution of order step
    ``o`` has seen, grown by doubling (the exact convolution needs the whole past, which a fixed-size library state
    cannot hold)."""

    def __init__(self, num_steps: int):
        super().__init__(number_of_states=1)
        self.history: list[torch.Tensor | None] = [None] * num_steps
        self.lengths = [0] * num_steps
        # Relaxed decoding at long contexts (hyena_hf.decoding): pending[o] (B, d, W) holds what the inputs seen so
        # far add to the outputs of the W positions from window_start on (None while no window is open).
        self.window_start: int | None = None
        self.pending: list[torch.Tensor | None] = [None] * num_steps

    def close_window(self) -> None:
        """Drop the relaxed-decoding window (the next token opens a new one from the whole history)."""
        self.window_start, self.pending = None, [None] * len(self.pending)

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

    def _map_rows(self, fn) -> None:
        """Apply ``fn`` to every per-row tensor beyond the library's states: histories and pending windows."""
        self.history = [None if h is None else fn(h) for h in self.history]
        self.pending = [None if p is None else fn(p) for p in self.pending]

    def _map_states(self, fn) -> None:
        super()._map_states(fn)
        self._map_rows(fn)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep the batch rows ``beam_idx (B',)`` of every state, history and window, in that order (beam search)."""
        super().reorder_cache(beam_idx)
        self._map_rows(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def offload(self):
        super().offload()
        self._map_rows(lambda t: t.to("cpu", non_blocking=True))

    def prefetch(self):
        super().prefetch()
        self._map_rows(lambda t: t.to(self.device, non_blocking=True))

    def reset(self) -> None:
        super().reset()
        self.history, self.lengths = [None] * len(self.history), [0] * len(self.history)
        self.close_window()

    def _row_tensors(self) -> list[torch.Tensor]:
        return super()._row_tensors() + [t for t in self.history + self.pending if t is not None]


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


def state_layers(config) -> list:
    """One new cache layer per block of ``config``'s model: ``DynamicLayer`` for attention, else the mixer's state
    layer, which records the model's :func:`state_layout`."""
    layers = []
    for mixer in config.mixer_types:
        if mixer == "attention":
            layers.append(DynamicLayer())
            continue
        if mixer == "h3":
            layer = H3State()
        elif mixer == "modal":
            layer = ModalState(config.hyena_order - 1)
        else:
            layer = HyenaConvState(config.hyena_order - 1)
        layer.layout = state_layout(config)
        layers.append(layer)
    return layers


class HyenaCache(Cache):
    """One cache for a whole Hyena-family model (long-convolution states and attention KV caches)."""

    def __init__(self, config):
        super().__init__(layers=state_layers(config))
        self.layout = state_layout(config)  # what the layers were built for (checked against the model)
        self.incomplete = False  # a forward raised part-way through filling it (see filled_by_forward)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens the cache holds: every layer counts them (attention layers as keys, state layers as a count)."""
        return self.layers[0].get_seq_length() if self.layers else 0

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return self.get_seq_length() > 0

    def reset(self) -> None:
        """Every layer back to its new state: the next forward starts a new sequence (any batch size)."""
        super().reset()
        self.incomplete = False

    @property
    def batch_size(self) -> int:
        """The rows B of the stored states (attention KV included), -1 while nothing is stored."""
        return stored_rows(self)

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


def stored_rows(cache: Cache) -> int:
    """The rows B of the states ``cache`` stores (attention KV included), -1 while it stores nothing."""
    for layer in cache.layers:
        if isinstance(layer, _HyenaStateLayer):
            size = layer.batch_size
        else:
            size = layer.keys.shape[0] if getattr(layer, "is_initialized", False) else -1
        if size >= 0:
            return size
    return -1


def _holds_states(layer) -> bool:
    if isinstance(layer, LinearAttentionLayer):
        return any(layer.is_conv_states_initialized.values()) or any(layer.is_recurrent_states_initialized.values())
    return bool(getattr(layer, "is_initialized", False))


def take_over(cache: DynamicCache, config) -> None:
    """Make transformers' ``DynamicCache`` this model's cache, in the same object: one that holds nothing yet
    (``DynamicCache()``, or ``DynamicCache(config=model.config)``, whose library layers have no room for the exact
    history or the per-prefill parameters) gets the layers of :func:`state_layers` in place of its own. Any other
    cache is left as it is, for :func:`hyena_hf.model_inputs.check_cache` to accept or refuse."""
    layers = cache.layers
    library_layers = all(type(layer) in (DynamicLayer, LinearAttentionLayer) for layer in layers)
    if len(layers) in (0, config.num_hidden_layers) and library_layers and not any(map(_holds_states, layers)):
        layers[:] = state_layers(config)


def layout_of(cache: Cache) -> dict | None:
    """The :func:`state_layout` of the model ``cache`` was built for, None where its layers do not record one
    (attention layers alone, or another library's layers)."""
    if isinstance(cache, HyenaCache):
        return cache.layout
    return next((layer.layout for layer in cache.layers if isinstance(layer, _HyenaStateLayer)), None)


def layer_kinds(cache: Cache) -> list[str]:
    """Per layer of ``cache``, the mixer type its states are for (``config.mixer_types``' names), or the class name
    of a layer of another kind."""
    kinds = {HyenaConvState: "implicit", ModalState: "modal", H3State: "h3", DynamicLayer: "attention"}
    return [kinds.get(type(layer), type(layer).__name__) for layer in cache.layers]


def is_incomplete(cache: Cache) -> bool:
    """Whether a forward raised part-way through filling ``cache`` (see :func:`filled_by_forward`)."""
    own = isinstance(cache, HyenaCache) and cache.incomplete
    return own or any(isinstance(layer, _HyenaStateLayer) and layer.incomplete for layer in cache.layers)


@contextlib.contextmanager
def filled_by_forward(cache: Cache | None, total: int):
    """The context of a forward that writes its tokens into ``cache`` layer by layer, after which the cache holds
    ``total`` tokens (recorded on entry: the layers read it). Where the forward raises part-way (out of memory, an
    interrupt, a hook's error), some layers hold the new tokens and others do not: the cache is marked incomplete
    and refused by the next forward (a continuation would silently be wrong) until ``reset()``."""
    state_layers_of = [] if cache is None else [layer for layer in cache.layers if isinstance(layer, _HyenaStateLayer)]
    for layer in state_layers_of:  # attention layers count their keys themselves
        layer.seen_tokens = total
    try:
        yield
    except BaseException:
        if isinstance(cache, HyenaCache):
            cache.incomplete = True
        for layer in state_layers_of:
            layer.incomplete = True
        raise
