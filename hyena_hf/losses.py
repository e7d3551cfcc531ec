"""The losses of the heads: transformers' own loss functions, after a check of the labels (a one-line error naming
them, where torch would fail with a batch-size mismatch or, on a GPU, a device-side assert), and for the language
model normalised so that a batch whose labels are all ignored gives 0 (with zero gradients) instead of NaN."""

from __future__ import annotations

import torch

from .model_inputs import check_ids

IGNORE_INDEX = -100  # transformers' (and torch's cross-entropy) label of a position without a target


def causal_lm_loss(loss_function, logits: torch.Tensor, labels: torch.Tensor, vocab_size: int, **kwargs):
    """``loss_function`` (the model's ``self.loss_function``) on ``logits (B, L, V)`` and ``labels (B, L)`` (or
    ``shift_labels (B, L)``, already shifted): the mean over target tokens computed as sum / count, the same value,
    but 0 when every label is -100. Trainer passes the count of the whole accumulated batch itself
    (``num_items_in_batch``)."""
    shift_labels, ignore_index = kwargs.get("shift_labels"), kwargs.get("ignore_index", IGNORE_INDEX)
    name, given = ("labels", labels) if shift_labels is None else ("shift_labels", shift_labels)
    if tuple(given.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"{name} must have the shape (batch, seq_len) of the logits, {tuple(logits.shape[:2])}, got "
            f"{tuple(given.shape)}"
        )
    check_ids(name, given, vocab_size, "token ids", str(vocab_size), ignore_index)
    if kwargs.get("num_items_in_batch") is None:
        targets = labels[..., 1:] if shift_labels is None else shift_labels
        kwargs["num_items_in_batch"] = (targets != ignore_index).sum().clamp(min=1)
    return loss_function(logits=logits, labels=labels, vocab_size=vocab_size, **kwargs)


def sequence_classification_loss(loss_function, labels: torch.Tensor, pooled_logits: torch.Tensor, config):
    """``loss_function`` (the model's) on ``pooled_logits (B, num_labels)`` and ``labels``: ``(B,)`` class ids for
    single-label classification (checked here), ``(B, num_labels)`` for multi-label, ``(B,)`` or ``(B, num_labels)``
    values for regression, the problem type chosen as transformers chooses it."""
    single_label = config.problem_type == "single_label_classification" or (
        config.problem_type is None and config.num_labels > 1 and labels.dtype in (torch.long, torch.int)
    )
    if single_label:
        if labels.numel() != pooled_logits.shape[0]:
            raise ValueError(
                f"labels must hold one class id per sequence, {pooled_logits.shape[0]}, got {labels.shape}"
            )
        check_ids("labels", labels, config.num_labels, "class ids", str(config.num_labels), IGNORE_INDEX)
    return loss_function(labels=labels, pooled_logits=pooled_logits, config=config)
