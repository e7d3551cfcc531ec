"""The losses of the heads: transformers' own loss functions, after a check of the labels (a one-line error naming
them, where torch would fail with a batch-size mismatch or, on a GPU, a device-side assert), and for the language
model normalised so that a batch whose labels are all ignored gives 0 (with zero gradients) instead of NaN."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # transformers' (and torch's cross-entropy) label of a position without a target


def check_class_labels(name: str, labels: torch.Tensor, classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """``labels`` hold integer class ids in ``[0, classes)`` or ``ignore_index``."""
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    if labels.numel() and not torch.compiler.is_compiling() and not torch.jit.is_tracing():
        out_of_range = (labels != ignore_index) & ((labels < 0) | (labels >= classes))
        if out_of_range.any():  # one device sync; the values for the message only on error
            low, high = (int(v) for v in labels[labels != ignore_index].aminmax())
            raise ValueError(
                f"{name} must be in [0, {classes}) or {ignore_index} (ignored), got values from {low} to {high}"
            )


def causal_lm_loss(loss_function, logits: torch.Tensor, labels: torch.Tensor, vocab_size: int, **kwargs):
    """``loss_function`` (the model's ``self.loss_function``) on ``logits (B, L, V)`` and ``labels (B, L)`` (or
    ``shift_labels (B, L)``, already shifted): the mean over target tokens computed as sum / count, the same value,
    but 0 when every label is -100. Trainer passes the count of the whole accumulated batch itself
    (``num_items_in_batch``)."""
    name = "labels" if kwargs.get("shift_labels") is None else "shift_labels"
    given = labels if kwargs.get("shift_labels") is None else kwargs["shift_labels"]
    if tuple(given.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"{name} must have the shape (batch, seq_len) of the logits, {tuple(logits.shape[:2])}, got "
            f"{tuple(given.shape)}"
        )
    check_class_labels(name, given, vocab_size, kwargs.get("ignore_index", IGNORE_INDEX))
    if kwargs.get("num_items_in_batch") is None:
        targets = kwargs.get("shift_labels")
        targets = labels[..., 1:] if targets is None else targets
        kwargs["num_items_in_batch"] = (targets != kwargs.get("ignore_index", IGNORE_INDEX)).sum().clamp(min=1)
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
        check_class_labels("labels", labels, config.num_labels)
    return loss_function(logits=pooled_logits, labels=labels, pooled_logits=pooled_logits, config=config)
