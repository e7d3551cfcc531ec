"""The language-modelling loss of ``HyenaForCausalLM``: transformers' own loss function, normalised so that a batch
whose labels are all ignored gives 0 (with zero gradients) instead of NaN."""

from __future__ import annotations

import torch


def causal_lm_loss(loss_function, logits: torch.Tensor, labels: torch.Tensor, vocab_size: int, **kwargs):
    """``loss_function`` (the model's ``self.loss_function``) on ``logits (B, L, V)`` and ``labels (B, L)``: the mean
    over target tokens computed as sum / count, the same value, but 0 when every label is -100. Trainer passes the
    count of the whole accumulated batch itself (``num_items_in_batch``)."""
    if kwargs.get("num_items_in_batch") is None:
        targets = kwargs.get("shift_labels")
        targets = labels[..., 1:] if targets is None else targets
        kwargs["num_items_in_batch"] = (targets != -100).sum().clamp(min=1)
    return loss_function(logits=logits, labels=labels, vocab_size=vocab_size, **kwargs)
