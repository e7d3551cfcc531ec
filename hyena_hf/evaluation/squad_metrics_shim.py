"""SQuAD-style answer scoring, importable as ``transformers.data.metrics.squad_metrics``.

lm-eval's ReCoRD task imports ``compute_exact`` and ``compute_f1`` from that module, which transformers 5 removed.
:func:`install` registers this module under the old name (only if transformers does not provide it).
"""

from __future__ import annotations

import collections
import re
import string
import sys
import types

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and English articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def get_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold, pred = get_tokens(a_gold), get_tokens(a_pred)
    if not gold or not pred:  # an empty answer only matches an empty answer
        return float(gold == pred)
    common = sum((collections.Counter(gold) & collections.Counter(pred)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def install() -> None:
    """Make ``transformers.data.metrics.squad_metrics`` importable (transformers 5 no longer ships it)."""
    name = "transformers.data.metrics.squad_metrics"
    try:
        __import__(name)
        return
    except ImportError:
        pass
    import transformers

    parents = ["transformers.data", "transformers.data.metrics"]
    for parent in parents:
        if parent not in sys.modules:
            try:
                __import__(parent)
            except ImportError:
                module = types.ModuleType(parent)
                module.__path__ = []
                sys.modules[parent] = module
    sys.modules[name] = sys.modules[__name__]
    sys.modules["transformers.data.metrics"].squad_metrics = sys.modules[__name__]
    if not hasattr(transformers, "data"):
        transformers.data = sys.modules["transformers.data"]
