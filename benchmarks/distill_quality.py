"""Quality cost of modal distillation: perplexity and logit KL of distilled vs original model on held-out text.

    python benchmarks/distill_quality.py [--model PATH] [--state-sizes 4 8 16 32 64] [--out benchmarks/results]

Without ``--model`` a small character-level Hyena LM is first trained (Trainer, CPU, a few minutes) on the English
text that ships with Python (``pydoc_data/topics.py``); the last 10% of the text is held out for evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import pydoc_data.topics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hyena_hf import HyenaConfig, HyenaForCausalLM, distill


def corpus() -> str:
    return "\n".join(pydoc_data.topics.topics.values())


def char_vocab(text: str) -> dict[str, int]:
    return {c: i for i, c in enumerate(sorted(set(text)))}


def windows(ids: torch.Tensor, length: int) -> torch.Tensor:
    n = (ids.numel() - 1) // length
    return ids[: n * length].view(n, length)


def train_char_lm(train_ids: torch.Tensor, vocab: int, seq_len: int, steps: int) -> HyenaForCausalLM:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    rows = windows(train_ids, seq_len)
    data = Dataset.from_dict({"input_ids": rows.tolist(), "labels": rows.tolist()})
    torch.manual_seed(0)
    model = HyenaForCausalLM(
        HyenaConfig(
            vocab_size=vocab,
            hidden_size=128,
            num_hidden_layers=4,
            max_position_embeddings=seq_len,
            filter_order=64,
            filter_emb_dim=9,
            filter_sin_freq=14.0,
            embd_pdrop=0.0,
            pad_vocab_size_multiple=8,
        )
    )
    args = TrainingArguments(
        output_dir="/tmp/distill_quality_lm",
        per_device_train_batch_size=16,
        max_steps=steps,
        learning_rate=2e-3,
        warmup_steps=steps // 20,
        lr_scheduler_type="cosine",
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
    )
    Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator).train()
    return model.eval()


@torch.no_grad()
def evaluate(model, reference, rows: torch.Tensor) -> dict[str, float]:
    nll, kl, count = 0.0, 0.0, 0
    for batch in rows.split(16):
        logits = model(batch).logits[:, :-1].double()
        logp = F.log_softmax(logits, -1)
        nll += F.nll_loss(logp.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
        if reference is not None:
            ref_logp = F.log_softmax(reference(batch).logits[:, :-1].double(), -1)
            kl += (ref_logp.exp() * (ref_logp - logp)).sum().item()
        count += batch[:, 1:].numel()
    return {"perplexity": math.exp(nll / count), "kl_from_original": kl / count if reference is not None else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-sizes", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--refine-steps", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    text = corpus()
    vocab = char_vocab(text)
    ids = torch.tensor([vocab[c] for c in text])
    split = int(0.9 * ids.numel())
    start = time.perf_counter()
    model = train_char_lm(ids[:split], len(vocab), args.seq_len, args.steps)
    train_seconds = time.perf_counter() - start
    held_out = windows(ids[split:], args.seq_len)[:64]
    results = {"original": evaluate(model, None, held_out)}
    print(f"original: perplexity {results['original']['perplexity']:.3f} (char-level, {held_out.numel()} tokens)")
    for n in tqdm(args.state_sizes, desc="distill quality"):
        modal, report = distill(model, n, refine_steps=args.refine_steps, progress=False, force=True)
        scores = evaluate(modal, model, held_out)
        scores["filter_relative_l2_error"] = report.relative_l2_error
        results[f"modal{n}"] = scores
        print(
            f"N={n:3d}: perplexity {scores['perplexity']:.3f}  KL(original||modal) {scores['kl_from_original']:.2e} "
            f"nats/token  filter error per layer " + " ".join(f"{e:.2e}" for e in report.relative_l2_error.values())
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distill_quality_cpu.json").write_text(
        json.dumps(
            {
                "command": f"python benchmarks/distill_quality.py --state-sizes {' '.join(map(str, args.state_sizes))} "
                f"--seq-len {args.seq_len} --steps {args.steps} --refine-steps {args.refine_steps}",
                "model": "char-level Hyena LM, width 128, 4 layers, order 2, trained on pydoc_data/topics.py",
                "train_seconds": train_seconds,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
