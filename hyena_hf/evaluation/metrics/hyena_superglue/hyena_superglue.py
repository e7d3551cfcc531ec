"""SuperGLUE metrics, as the official definitions compute them, and perplexity, as a local `evaluate` module (loads
offline with ``evaluate.load(path, config)``; F1 and correlation from scikit-learn).

Configurations and inputs:

* boolq, copa, rte, wic, wsc, axg: accuracy (``predictions``, ``references``: labels);
* cb: accuracy and macro-averaged F1 over the classes;
* axb: Matthews correlation;
* multirc: ``predictions`` are ``{"idx": {"paragraph", "question", "answer"}, "prediction": 0|1}``, ``references``
  the 0/1 labels of the answer options. ``exact_match``: fraction of questions with every option right; ``f1_a``:
  F1 over all answer options; ``f1_m``: F1 of the per-question precision and recall averaged over questions (a
  question without predicted / gold positives has precision / recall 1), as MultiRC's own evaluation computes it;
* record: ``predictions`` are answer strings, ``references`` lists of gold answers; exact match and token F1, each
  the maximum over the gold answers (SQuAD normalisation), averaged;
* perplexity: ``predictions`` are per-token negative log-likelihoods; returns exp of their mean.
"""

import math
from collections import defaultdict

import datasets
import evaluate
from sklearn.metrics import f1_score, matthews_corrcoef, precision_score, recall_score

from hyena_hf.evaluation.tasks.record_scoring import compute_exact, compute_f1, max_over_answers

_CITATION = "Wang et al., SuperGLUE: A Stickier Benchmark for General-Purpose Language Understanding Systems, 2019."
_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = "predictions and references as described in the module docstring, per configuration."
_ACCURACY_TASKS = ("boolq", "copa", "rte", "wic", "wsc", "axg")
CONFIGS = _ACCURACY_TASKS + ("cb", "axb", "multirc", "record", "perplexity")


def _multirc(predictions, references) -> dict[str, float]:
    questions = defaultdict(lambda: ([], []))
    for prediction, label in zip(predictions, references):
        idx = prediction["idx"]
        preds, labels = questions[(idx["paragraph"], idx["question"])]
        preds.append(prediction["prediction"])
        labels.append(label)
    precision = [precision_score(labels, preds, zero_division=1.0) for preds, labels in questions.values()]
    recall = [recall_score(labels, preds, zero_division=1.0) for preds, labels in questions.values()]
    p, r = sum(precision) / len(precision), sum(recall) / len(recall)
    exact = [preds == labels for preds, labels in questions.values()]
    return {
        "exact_match": sum(exact) / len(exact),
        "f1_m": 0.0 if p + r == 0 else 2 * p * r / (p + r),
        "f1_a": float(f1_score(references, [x["prediction"] for x in predictions], zero_division=0.0)),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HyenaSuperGlue(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise KeyError(f"unknown configuration {self.config_name!r}; choose one of {CONFIGS}")
        if self.config_name == "record":
            features = {
                "predictions": datasets.Value("string"),
                "references": datasets.Sequence(datasets.Value("string")),
            }
        elif self.config_name == "multirc":
            index = {
                "paragraph": datasets.Value("int64"),
                "question": datasets.Value("int64"),
                "answer": datasets.Value("int64"),
            }
            features = {
                "predictions": {"idx": index, "prediction": datasets.Value("int64")},
                "references": datasets.Value("int64"),
            }
        elif self.config_name == "perplexity":
            features = {"predictions": datasets.Value("float64")}
        else:
            features = {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(features),
        )

    def _compute(self, predictions, references=None):
        name = self.config_name
        if name == "perplexity":
            return {"perplexity": math.exp(sum(predictions) / len(predictions))}
        if name == "record":
            return {
                "exact_match": sum(max_over_answers(compute_exact, p, gold) for p, gold in zip(predictions, references))
                / len(predictions),
                "f1": sum(max_over_answers(compute_f1, p, gold) for p, gold in zip(predictions, references))
                / len(predictions),
            }
        if name == "multirc":
            return _multirc(predictions, references)
        if name == "axb":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        accuracy = sum(p == r for p, r in zip(predictions, references)) / len(predictions)
        if name == "cb":
            return {"accuracy": accuracy, "f1": float(f1_score(references, predictions, average="macro"))}
        return {"accuracy": accuracy}
