"""SuperGLUE metrics and perplexity as a local `evaluate` module (loads offline with ``evaluate.load(path)``).

Configurations: boolq, copa, rte, wic, wsc (accuracy); cb (accuracy, macro F1); multirc (accuracy, F1 of the
positive class); record (exact match, token F1; ``predictions`` are answer strings, ``references`` lists of gold
answers); perplexity (``predictions`` are per-token negative log-likelihoods; returns exp of their mean).
"""

import math

import datasets
import evaluate

from hyena_hf.evaluation.tasks.record_scoring import compute_exact, compute_f1

_CITATION = "Wang et al., SuperGLUE: A Stickier Benchmark for General-Purpose Language Understanding Systems, 2019."
_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = "predictions and references as described in the module docstring, per configuration."
_ACCURACY_TASKS = ("boolq", "copa", "rte", "wic", "wsc", "axg", "axb")
CONFIGS = _ACCURACY_TASKS + ("cb", "multirc", "record", "perplexity")


def _f1_binary(preds, refs, positive=1):
    tp = sum(p == positive and r == positive for p, r in zip(preds, refs))
    fp = sum(p == positive and r != positive for p, r in zip(preds, refs))
    fn = sum(p != positive and r == positive for p, r in zip(preds, refs))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HyenaSuperGlue(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise KeyError(f"unknown configuration {self.config_name!r}; choose one of {CONFIGS}")
        if self.config_name == "record":
            features = {"predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string"))}
        elif self.config_name == "perplexity":
            features = {"predictions": datasets.Value("float64")}
        else:
            features = {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
                                   features=datasets.Features(features))

    def _compute(self, predictions, references=None):
        name = self.config_name
        if name == "perplexity":
            return {"perplexity": math.exp(sum(predictions) / len(predictions))}
        if name == "record":
            return {"exact_match": sum(max(compute_exact(g, p) for g in gold) for p, gold in zip(predictions, references))
                    / len(predictions),
                    "f1": sum(max(compute_f1(g, p) for g in gold) for p, gold in zip(predictions, references))
                    / len(predictions)}
        accuracy = sum(p == r for p, r in zip(predictions, references)) / len(predictions)
        if name == "cb":
            labels = sorted(set(references) | set(predictions))
            macro = sum(_f1_binary(predictions, references, c) for c in labels) / len(labels)
            return {"accuracy": accuracy, "f1": macro}
        if name == "multirc":
            return {"accuracy": accuracy, "f1": _f1_binary(predictions, references)}
        return {"accuracy": accuracy}
