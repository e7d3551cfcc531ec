"""lm-evaluation-harness on the tiny offline SuperGLUE set, checked against log-likelihoods computed directly."""

import math
import sys

import numpy as np
import pytest
import torch

from hyena_hf.evaluation.harness import SUPERGLUE_TASKS, evaluate
from hyena_hf.evaluation.tasks import record_scoring

from test_pipeline_trainer import text_model, train_tokenizer


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = train_tokenizer()
    return text_model(tokenizer), tokenizer


def _loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens | context), the comparison lm-eval makes, computed directly."""
    if context.endswith(" "):  # lm-eval moves a trailing space of the context into the continuation
        continuation = " " + continuation
        context = context[:-1]
    ctx = tokenizer(context, add_special_tokens=False).input_ids
    cont = tokenizer(continuation, add_special_tokens=False).input_ids
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
    targets = ids[0, 1:]
    return logp[torch.arange(len(targets)), targets][-len(cont) :].sum().item()


@pytest.mark.parametrize("num_fewshot", [0, 2])
def test_superglue_local_run_matches_direct_loglikelihoods(model_and_tokenizer, num_fewshot):
    model, tokenizer = model_and_tokenizer
    out = evaluate(model, tokenizer, local=True, num_fewshot=num_fewshot, batch_size=4)
    results, samples = out["results"], out["samples"]
    assert set(results) == {t + "_local" for t in SUPERGLUE_TASKS}
    for task in SUPERGLUE_TASKS:
        name = task + "_local"
        metric = "f1,none" if task == "record" else "acc,none"
        assert metric in results[name] and math.isfinite(float(results[name][metric]))
        correct, f1s = [], []
        for sample in samples[name]:
            lls = [_loglikelihood(model, tokenizer, *arg) for arg in sample["arguments"]]
            harness_lls = [float(r[0]) for r in sample["filtered_resps"]]
            np.testing.assert_allclose(lls, harness_lls, atol=1e-3)
            best = int(np.argmax(lls))
            if task == "record":
                prediction = sample["doc"]["entities"][best]
                f1s.append(max(record_scoring.compute_f1(g, prediction) for g in sample["doc"]["answers"]))
            else:
                correct.append(best == sample["target"])
        expected = np.mean(f1s) if task == "record" else np.mean(correct)
        assert abs(float(results[name][metric]) - expected) < 1e-9, (task, results[name][metric], expected)


def test_record_scorer_on_hand_computed_cases():
    assert record_scoring.compute_exact("The Eiffel Tower!", "eiffel tower") == 1
    assert record_scoring.compute_f1("Claire Dubois", "Mayor Claire Dubois") == pytest.approx(0.8)
    assert record_scoring.compute_f1("", "") == 1.0 and record_scoring.compute_f1("a", "Lyon") == 0.0
    doc = {"entities": ["Lyon", "Paris", "the Paris Commune"], "answers": ["Paris", "Paris, France"]}
    # the most likely entity is scored, as the maximum over the gold answers
    assert record_scoring.process_results(doc, [(-3.0, False), (-1.0, False), (-2.0, False)]) == {"f1": 1.0, "em": 1.0}
    partial = record_scoring.process_results(doc, [(-3.0, False), (-4.0, False), (-2.0, False)])
    assert partial == {"f1": pytest.approx(2 / 3), "em": 0.0}  # "paris commune" vs "paris": P 1/2, R 1
    assert "transformers.data.metrics.squad_metrics" not in sys.modules  # nothing injected into transformers


def test_max_length_is_max_position_embeddings(model_and_tokenizer):
    from hyena_hf.evaluation.harness import make_lm

    model, tokenizer = model_and_tokenizer
    assert make_lm(model, tokenizer).max_length == 512


def test_local_evaluate_metric_module():
    from hyena_hf.evaluation.harness import load_metric

    assert load_metric("boolq").compute(predictions=[1, 0, 1], references=[1, 1, 1])["accuracy"] == pytest.approx(2 / 3)
    cb = load_metric("cb").compute(predictions=[0, 1, 2, 0], references=[0, 1, 1, 0])
    assert cb["accuracy"] == 0.75 and cb["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    rec = load_metric("record").compute(predictions=["Lyon", "Paris"], references=[["Lyon"], ["Oslo"]])
    assert rec == {"exact_match": 0.5, "f1": 0.5}
    ppl = load_metric("perplexity").compute(predictions=[1.0, 2.0, 3.0])["perplexity"]
    assert ppl == pytest.approx(math.exp(2.0))
