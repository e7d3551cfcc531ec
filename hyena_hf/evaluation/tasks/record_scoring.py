"""ReCoRD for lm-eval with the project's own scorer: the task hooks of ``record_hyena.yaml`` (beside this file).

lm-eval's own ``record`` task imports ``transformers.data.metrics.squad_metrics``, which transformers 5 removed; this
task asks the same questions of the same data (``aps/super_glue``, ``record``) and scores them as the official ReCoRD
evaluation does: the most likely entity is the prediction, exact match and token F1 are the maxima over the gold
answers (SQuAD answer normalisation), averaged over examples. Self-contained: lm-eval imports this file by path.
"""

from __future__ import annotations

import collections
import re
import string

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


def max_over_answers(score, prediction: str, answers: list[str]) -> float:
    return max(score(answer, prediction) for answer in answers)


# -- lm-eval task hooks ------------------------------------------------------------------------------------------------
def doc_to_text(doc: dict) -> str:
    """The passage, its ``@highlight`` lines as bullet points after it."""
    passage, *highlights = doc["passage"].strip().split("\n@highlight\n")
    return passage + "\n\n" + "".join(f"  - {highlight}.\n" for highlight in highlights)


def _query_with(query: str, entity: str) -> str:
    return f"  - {query}".replace("@placeholder", entity)


def doc_to_choice(doc: dict) -> list[str]:
    return [_query_with(doc["query"], entity) for entity in doc["entities"]]


def doc_to_target(doc: dict) -> str:
    return _query_with(doc["query"], doc["answers"][0])


def process_docs(dataset):
    """Entities and answers deduplicated and sorted (a choice's index is then stable)."""
    return dataset.map(lambda doc: {"entities": sorted(set(doc["entities"])), "answers": sorted(set(doc["answers"]))})


def process_results(doc: dict, results: list) -> dict[str, float]:
    """``results``: one (log-likelihood, is_greedy) pair per entity."""
    best = max(range(len(results)), key=lambda i: results[i][0])
    prediction = doc["entities"][best]
    return {
        "f1": max_over_answers(compute_f1, prediction, doc["answers"]),
        "em": float(max_over_answers(compute_exact, prediction, doc["answers"])),
    }
