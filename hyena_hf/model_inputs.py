"""What the models check and derive from their inputs before mixing: token ids, shapes, lengths, position ids and
the padding / attention masks each mixer takes. One-line errors name the input and the cause."""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast

from . import cache_hyena
from .cache_hyena import HyenaCache, state_layout
from .configuration_hyena import HyenaConfig
from .ops_cpu import residual_adds_in_place


class ModelInputs(NamedTuple):
    """What the blocks take: the embeddings ``(B, L, d)`` (zero at padded positions), the total length (cached +
    new), positions ``(B, L)``, the padding multiplier ``(B, 1, L)`` of the long-convolution mixers and the mask of
    the attention layers (in the format of their kernel); the masks are None where nothing needs masking."""

    embeds: torch.Tensor
    total: int
    positions: torch.Tensor
    padding: torch.Tensor | None
    attention: torch.Tensor | None
    branches_unobserved: bool = False  # inference may add the residual into the blocks' outputs (see ops_cpu)
    embeds_owned: bool = False  # ``embeds`` is the model's own tensor (embedding lookup or masked copy), not a caller's


def prepare_model_inputs(
    model: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    past_key_values: HyenaCache | None,
    output_attentions: bool,
    embeds_owned: bool = False,
) -> ModelInputs:
    """Check ``inputs_embeds (B, L, d)``, the cache, the total length and ``attention_mask (B, past + L)``, and derive
    what the blocks of ``model`` (a HyenaModel) take (see :class:`ModelInputs`). ``embeds_owned``: the embeddings
    come from the model's own lookup, not from the caller."""
    config = model.config
    check_inputs_embeds(inputs_embeds, config.hidden_size)
    bsz, seqlen = inputs_embeds.shape[:2]
    check_cache(past_key_values, config, bsz)
    past = past_key_values.get_seq_length() if past_key_values is not None else 0
    total = past + seqlen
    check_length(config, total)
    check_attention_mask(attention_mask, bsz, total)
    if position_ids is None:
        position_ids = position_ids_for(attention_mask, bsz, past, total, inputs_embeds.device)
    new_mask = None if attention_mask is None else attention_mask[:, past:]
    if new_mask is not None:  # padded positions are selected away, not multiplied (NaN * 0 is NaN)
        inputs_embeds = inputs_embeds.masked_fill(~new_mask.bool()[..., None], 0.0)
        embeds_owned = True
    attention = None
    if config.attn_layer_idx:
        implementation = "eager" if output_attentions else config._attn_implementation
        attention = attention_mask_for(
            attention_mask, seqlen, total, inputs_embeds.dtype, inputs_embeds.device, implementation
        )
    padding = padding_multiplier(new_mask, inputs_embeds.dtype)
    unobserved = residual_adds_in_place(model, inputs_embeds)
    return ModelInputs(inputs_embeds, total, position_ids, padding, attention, unobserved, embeds_owned)


def tracing() -> bool:
    """Under torch.compile / torch.export: no data-dependent branches (see also ``ops.exporting``)."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def has_padding(attention_mask: torch.Tensor | None) -> bool:
    """Whether a (B, L) 0/1 mask pads anything; always assumed when traced (no data-dependent branch there)."""
    return attention_mask is not None and (tracing() or not bool(attention_mask.all()))


def padding_multiplier(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, L) 0/1 mask -> (B, 1, L) multiplier, or None when nothing is padded (always the multiplier when traced)."""
    if not has_padding(attention_mask):
        return None
    return attention_mask[:, None, :].to(dtype)


def check_length(config: HyenaConfig, seqlen: int, generating: bool = False) -> None:
    """Implicit filters exist up to ``max_position_embeddings`` positions: a longer input (cached + new) is refused;
    with ``generating``, ``seqlen`` is what generate() may reach (prompt and new tokens), refused before the prefill
    (it would otherwise fail there, after the work up to it)."""
    limit = config.max_position_embeddings
    if not (config.has_length_limit and seqlen > limit):
        return
    if generating:
        raise ValueError(
            f"generate() may reach {seqlen} tokens (prompt and max_new_tokens), beyond max_position_embeddings={limit} "
            f"(the length of the implicit Hyena filters): ask for {seqlen - limit} fewer new tokens, or shorten the "
            "prompt"
        )
    raise ValueError(
        f"Input length {seqlen} exceeds max_position_embeddings={limit} (the length of the implicit Hyena filters). "
        "Truncate the input, or load the model with a larger max_position_embeddings (the filters are then evaluated "
        "at new positions and the model must be fine-tuned)."
    )


def embed_inputs(
    embeddings: torch.nn.Module, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, vocab_size: int
) -> torch.Tensor:
    """``inputs_embeds (B, L, d)``, or the embeddings of the checked ``input_ids (B, L)``; exactly one is given."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids or inputs_embeds")
    if inputs_embeds is not None:
        return inputs_embeds
    check_input_ids(input_ids, vocab_size)
    return embeddings(input_ids)


def check_input_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Shape, dtype and range of token ids ``(B, L)``, with a one-line error (an embedding lookup would fail with a
    bare IndexError, or silently read the padding rows beyond vocab_size)."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}")
    check_ids("input_ids", input_ids, vocab_size, "token ids", f"vocab_size={vocab_size}")


def check_ids(name: str, ids: torch.Tensor, upper: int, kind: str, bound: str, ignore_index: int | None = None) -> None:
    """``ids`` (any shape) hold integers in [0, ``upper``) (or ``ignore_index``), else a one-line error naming
    ``name``, worded by ``kind`` ("token ids", "class ids") and ``bound`` (how ``upper`` reads). One device sync;
    skipped while tracing."""
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer {kind}, got dtype {ids.dtype}")
    if not ids.numel() or tracing():
        return
    kept = ids if ignore_index is None else ids.masked_fill(ids == ignore_index, 0)  # 0 is always in range
    low, high = (int(v) for v in kept.aminmax())
    if low < 0 or high >= upper:
        if ignore_index is not None:  # the range of the values given, for the message
            low, high = (int(v) for v in ids[ids != ignore_index].aminmax())
        ignored = "" if ignore_index is None else f" or {ignore_index} (ignored)"
        raise ValueError(f"{name} must be {kind} in [0, {bound}){ignored}, got values from {low} to {high}")


def check_inputs_embeds(inputs_embeds: torch.Tensor, hidden_size: int) -> None:
    """``inputs_embeds`` must be ``(B, L, hidden_size)``."""
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != hidden_size:
        raise ValueError(
            f"inputs_embeds must have shape (batch, seq_len, {hidden_size}), got {tuple(inputs_embeds.shape)}"
        )


def check_attention_mask(attention_mask: torch.Tensor | None, batch: int, total: int) -> None:
    """The mask covers the cached and the new tokens: ``(B, past + L)``."""
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, total):
        raise ValueError(
            f"attention_mask must have shape {(batch, total)} (past + new tokens), got {tuple(attention_mask.shape)}"
        )


def position_ids_for(
    attention_mask: torch.Tensor | None, batch: int, past: int, total: int, device: torch.device
) -> torch.Tensor:
    """``(B, total - past)`` positions of the new tokens: counted over real tokens only when padded (left padding
    then gives the same positions as no padding), else past .. total - 1."""
    if attention_mask is not None:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
    return torch.arange(past, total, device=device)[None].expand(batch, -1)


def attention_mask_for(
    attention_mask: torch.Tensor | None, q_len: int, kv_len: int, dtype: torch.dtype, device, implementation: str | None
) -> torch.Tensor | None:
    """The mask each attention kernel expects (as transformers' masking utilities build them): flash attention a
    ``(B, T)`` padding mask (None without padding; it applies causality itself), SDPA a boolean ``(B|1, 1, q, T)``
    mask (True = attend) or None where its own causal flag is right, eager an additive mask in ``dtype``, always."""
    if implementation and implementation.startswith("flash_attention"):
        return attention_mask[:, -kv_len:] if has_padding(attention_mask) else None
    eager = implementation in (None, "eager")
    allowed = allowed_positions(attention_mask, q_len, kv_len, device, always=eager)
    if allowed is None or not eager:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


def allowed_positions(
    attention_mask: torch.Tensor | None, q_len: int, kv_len: int, device, always: bool = False
) -> torch.Tensor | None:
    """Boolean (B|1, 1, q, kv) causal + padding mask for queries at positions kv_len-q_len .. kv_len-1.

    None when plain causal attention is right (no padding, and no cached prefix or a single query), unless
    ``always``. Every query may attend to itself, so fully padded rows give finite values instead of NaN.
    """
    past = kv_len - q_len
    if not has_padding(attention_mask) and (past == 0 or q_len == 1) and not always:
        return None
    q_pos = torch.arange(past, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    allowed = (k_pos <= q_pos)[None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, -kv_len:].bool()
    allowed = allowed | (k_pos == q_pos)[None]
    return allowed[:, None]


def check_cache(past_key_values, config: HyenaConfig, batch_size: int | None = None) -> None:
    """Decoding state must be a HyenaCache or transformers' ``DynamicCache`` (which then takes this model's layers,
    see :func:`~hyena_hf.cache_hyena.take_over`), built for this model's layers, complete, and, once filled,
    holding ``batch_size`` rows."""
    if past_key_values is None:
        return
    if isinstance(past_key_values, DynamicCache):
        cache_hyena.take_over(past_key_values, config)
    elif not isinstance(past_key_values, HyenaCache):
        kind = type(past_key_values).__name__
        raise ValueError(
            f"past_key_values must be a HyenaCache or a DynamicCache (or None: the model then builds one), got {kind}, "
            "which cannot hold the long-convolution states"
        )
    if cache_hyena.is_incomplete(past_key_values):
        raise ValueError(
            "past_key_values was left incomplete by a forward that raised part-way (some layers hold its tokens, "
            "others do not): call past_key_values.reset() and run the prompt again"
        )
    model_layout, layout = state_layout(config), cache_hyena.layout_of(past_key_values)
    differ = [f"{k} {v} (this model: {model_layout[k]})" for k, v in (layout or {}).items() if v != model_layout[k]]
    kinds = cache_hyena.layer_kinds(past_key_values)
    if not differ and kinds and kinds != config.mixer_types:
        differ = [f"layers {kinds} (this model: {config.mixer_types})"]
    if differ:
        raise ValueError(f"past_key_values was built for another model: {', '.join(differ)}")
    rows = cache_hyena.stored_rows(past_key_values)
    if batch_size is not None and rows >= 0 and rows != batch_size:
        raise ValueError(
            f"past_key_values holds {rows} sequences, got a batch of {batch_size} (continue the rows the cache was "
            "filled with; batch_select_indices / batch_repeat_interleave change its rows)"
        )


def check_prompt(input_ids: torch.Tensor, inputs_embeds: torch.Tensor | None, past_key_values) -> None:
    """generate() needs at least one token to start from (or a cache that has seen some)."""
    if inputs_embeds is None and input_ids.shape[1] == 0 and not (past_key_values and past_key_values.get_seq_length()):
        raise ValueError(
            "generate() needs a prompt of at least one token, got input_ids of length 0 (start from "
            "a BOS token, e.g. tokenizer.bos_token_id)"
        )


def last_real_positions(
    attention_mask: torch.Tensor | None,
    input_ids: torch.Tensor | None,
    pad_token_id: int | None,
    shape: tuple[int, int],
    device: torch.device,
) -> torch.Tensor:
    """``(B,)`` position of each row's last real token (left or right padding), the one a sequence classifier
    pools: from the attention mask when given, else from ``pad_token_id``; a lone sequence needs neither."""
    bsz, seqlen = shape
    if attention_mask is not None:
        real = attention_mask.to(device).bool()
    elif input_ids is not None and pad_token_id is not None:
        real = input_ids.to(device) != pad_token_id
    elif bsz == 1 or input_ids is None:
        real = torch.ones(bsz, seqlen, dtype=torch.bool, device=device)
    else:
        raise ValueError("Cannot pool a batch of more than one sequence without attention_mask or pad_token_id")
    positions = torch.arange(seqlen, device=device)
    return torch.where(real, positions, -1).max(-1).values.clamp(min=0)


def empty_output(
    model, inputs_embeds: torch.Tensor, cache, hidden_states: bool, attentions: bool
) -> BaseModelOutputWithPast:
    """What ``model`` (a HyenaModel) returns for an empty batch or length (``inputs_embeds (B, L, d)`` with B or L
    zero): nothing to mix, the final norm of the empty embeddings, the cache unchanged."""
    normed = model.norm_f(inputs_embeds.to(model.norm_f.weight.dtype))
    all_hidden_states = (normed,) * (len(model.layers) + 1) if hidden_states else None
    return BaseModelOutputWithPast(normed, cache, all_hidden_states, () if attentions else None)
