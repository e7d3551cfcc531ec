"""Saving, loading and resizing in this model's terms, as a mixin of ``HyenaPreTrainedModel``: what
``from_pretrained`` refuses or warns about beyond transformers' own loading, the model code written beside every
save (remote code), and the vocabulary resize (``vocab_size`` is the width of the logits; the embedding keeps
padded rows)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .precision import half_precision_filter_tensors
from .remote_code import write_model_code


class HyenaCheckpointMixin:
    """Overrides of transformers' ``from_pretrained`` / ``save_pretrained`` / ``resize_token_embeddings``."""

    # Keys a task head may legitimately lack in a checkpoint of another head (initialised fresh, as transformers does).
    _new_head_prefixes = ("lm_head.", "score.")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, plus the refusals of :func:`check_loaded` (a backbone weight missing from the
        checkpoint, NaN/inf weights)."""
        want_info = kwargs.pop("output_loading_info", False)
        state_dict = kwargs.get("state_dict")  # from_pretrained(None, config=..., state_dict=...) loads no folder
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        check_loaded(model, info, pretrained_model_name_or_path, cls._new_head_prefixes, state_dict)
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        """transformers' save, plus the model's code and an ``auto_map`` (see :mod:`hyena_hf.remote_code`), so the
        folder loads with ``trust_remote_code=True`` where hyena-hf is not installed."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_model_code(save_directory)
        if push_to_hub:  # push_to_hub saves again (through this method) into the folder it uploads
            self.push_to_hub(kwargs.get("repo_id") or Path(save_directory).name, token=kwargs.get("token"))

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """``new_num_tokens`` becomes ``config.vocab_size``; see :func:`resize_token_embeddings`."""
        return resize_token_embeddings(self, new_num_tokens, pad_to_multiple_of, mean_resizing)


def check_loaded(
    model: nn.Module, info: dict, source, new_head_prefixes: tuple[str, ...], state_dict: dict | None = None
) -> None:
    """Refuse a backbone weight missing from the checkpoint (a config that does not match the weights, e.g. another
    ``filter_type``, would otherwise leave randomly initialised mixers behind a load-report warning) and weights
    holding NaN/inf (a damaged file); warn when long filters were stored in half precision. ``source`` is the folder
    or hub id, None for a load from ``state_dict`` alone."""
    name = "state_dict" if source is None else source  # for the messages
    fresh = sorted(k for k in info["missing_keys"] if not k.startswith(new_head_prefixes))
    if fresh:
        shown = ", ".join(fresh[:3]) + (f" and {len(fresh) - 3} more" if len(fresh) > 3 else "")
        raise ValueError(
            f"{name}: the checkpoint has no weights for {shown}; its config "
            "does not describe these weights (filter_type, hyena_order, attn_layer_idx?)"
        )
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not tensor.is_meta and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name}: weight {key} holds NaN or infinite values (a damaged or corrupted file)")
    rounded = half_precision_filter_tensors(source, state_dict)  # the state dict when given, else the folder's files
    if rounded:
        warnings.warn(
            f"{name} stores {len(rounded)} long-filter tensors in half precision "
            f"({rounded[0]}, ...): they are used in float32, but their rounding cannot be undone and can "
            "change the outputs completely; re-save or re-convert the model from float32 weights",
            stacklevel=4,
        )


def resize_token_embeddings(
    model, new_num_tokens: int | None, pad_to_multiple_of: int | None, mean_resizing: bool
) -> nn.Embedding:
    """transformers' resize in this model's terms: ``new_num_tokens`` becomes ``config.vocab_size`` (the width of
    the logits) and the embedding (and an untied head) keep ``vocab_size`` rounded up to ``pad_to_multiple_of``
    (else ``config.pad_vocab_size_multiple``) rows, so the resized model saves and loads. Old tokens keep their
    rows (their logits do not change); new tokens are initialised as transformers does (around the mean of the
    old tokens' rows with ``mean_resizing``, else normal with ``initializer_range``); padding rows are zero."""
    config = model.config
    if new_num_tokens is None and pad_to_multiple_of is None:
        return model.get_input_embeddings()
    old_vocab, new_vocab = config.vocab_size, int(new_num_tokens or config.vocab_size)
    multiple = int(pad_to_multiple_of or config.pad_vocab_size_multiple)
    if new_vocab < 1 or multiple < 1:
        raise ValueError(
            f"resize_token_embeddings needs new_num_tokens >= 1 and pad_to_multiple_of >= 1, got "
            f"{new_vocab} and {multiple}"
        )
    rows = -(-new_vocab // multiple) * multiple
    embeddings = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embeddings.weight
    for module in (embeddings,) if head is None or tied else (embeddings, head):
        module.weight = nn.Parameter(
            _resized_rows(model, module.weight, old_vocab, new_vocab, rows, mean_resizing),
            requires_grad=module.weight.requires_grad,
        )
    embeddings.num_embeddings = rows
    if head is not None and not tied:
        head.out_features = rows
    config.vocab_size, config.pad_vocab_size_multiple = new_vocab, multiple
    model.tie_weights()
    return embeddings


@torch.no_grad()
def _resized_rows(
    model, weight: torch.Tensor, old_vocab: int, new_vocab: int, rows: int, mean_resizing: bool
) -> torch.Tensor:
    """``weight (old rows, d)`` -> ``(rows, d)``: the first ``min(old, new)`` token rows kept, new token rows
    initialised, padding rows zero."""
    keep, added = min(old_vocab, new_vocab), max(0, new_vocab - old_vocab)
    out = weight.new_zeros(rows, weight.shape[1])
    out[:keep] = weight[:keep]
    if added:
        old_rows = nn.Embedding.from_pretrained(weight[:old_vocab].detach())
        new_rows = nn.Embedding(new_vocab, weight.shape[1], device=weight.device, dtype=weight.dtype)
        if mean_resizing:  # transformers' own initialisation of added tokens
            model._init_added_embeddings_weights_with_mean(old_rows, new_rows, old_vocab, added)
        else:
            new_rows.weight.normal_(std=model.config.initializer_range)
        out[old_vocab:new_vocab] = new_rows.weight[old_vocab:]
    return out
