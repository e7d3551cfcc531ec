"""Synthetic mechanistic tasks of the H3 / Hyena papers, as `datasets.Dataset`s with a word-level tokenizer.

Associative recall: ``k1 v1 k2 v2 ... kn vn q`` -> the value that followed key ``q``. Keys and values are disjoint
token sets; every key appears once, so the answer is determined by the context. Induction heads: a random sequence
containing a special token ``@`` followed by some token ``x`` early on; the sequence ends in ``@`` and the answer is
``x``.
Only the answer position carries a label (-100 elsewhere), so the loss and the accuracy measure recall, not the noise.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[EOS]", "@"]


@dataclass
class RecallTask:
    """(Multi-query) associative recall: ``num_pairs`` key-value pairs, then ``num_queries`` keys from the context,
    each followed by its value. Every queried value is a supervised answer (``num_queries=1`` is the classic task)."""

    num_keys: int = 20
    num_values: int = 20
    num_pairs: int = 8
    num_queries: int = 4

    def __post_init__(self):
        if self.num_pairs > self.num_keys:
            raise ValueError(f"num_pairs ({self.num_pairs}) cannot exceed num_keys ({self.num_keys}): keys are unique")
        if min(self.num_keys, self.num_values, self.num_pairs, self.num_queries) < 1:
            raise ValueError("num_keys, num_values, num_pairs and num_queries must be positive")

    @property
    def keys(self) -> list[str]:
        return [f"k{i}" for i in range(self.num_keys)]

    @property
    def values(self) -> list[str]:
        return [f"v{i}" for i in range(self.num_values)]

    @property
    def seq_len(self) -> int:
        return 2 * (self.num_pairs + self.num_queries)

    def sample(self, rng: random.Random) -> tuple[list[str], list[bool]]:
        """(words, is_answer): the sequence and which positions are recalled values."""
        keys = rng.sample(self.keys, self.num_pairs)
        values = [rng.choice(self.values) for _ in keys]
        words = [w for pair in zip(keys, values) for w in pair]
        answers = [False] * len(words)
        for _ in range(self.num_queries):
            q = rng.randrange(self.num_pairs)
            words += [keys[q], values[q]]
            answers += [False, True]
        return words, answers


@dataclass
class InductionTask:
    """Induction heads: ``... @ x ... @`` -> ``x`` over a vocabulary of ``num_tokens`` symbols."""

    num_tokens: int = 20
    seq_len: int = 32

    def __post_init__(self):
        if self.seq_len < 4 or self.num_tokens < 2:
            raise ValueError("InductionTask needs seq_len >= 4 and num_tokens >= 2")

    @property
    def symbols(self) -> list[str]:
        return [f"t{i}" for i in range(self.num_tokens)]

    def sample(self, rng: random.Random) -> tuple[list[str], list[bool]]:
        body = [rng.choice(self.symbols) for _ in range(self.seq_len - 2)]
        pos = rng.randrange(0, len(body) - 2)
        body[pos] = "@"
        words = body + ["@", body[pos + 1]]
        return words, [False] * (len(words) - 1) + [True]


def make_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (built with the `tokenizers` library) over the task's symbols."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + [w for w in words if w not in SPECIAL_TOKENS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]", padding_side="left"
    )


def task_words(task) -> list[str]:
    if isinstance(task, RecallTask):
        return task.keys + task.values
    return task.symbols + ["@"]


def build_dataset(task, tokenizer: PreTrainedTokenizerFast, num_examples: int, seed: int):
    """`datasets.Dataset`: input_ids, attention_mask, labels (answer positions only, -100 elsewhere), and the
    text ``prompt`` / ``answer`` of the last answer (for generation demos)."""
    from datasets import Dataset

    rng = random.Random(seed)
    rows = {"input_ids": [], "attention_mask": [], "labels": [], "prompt": [], "answer": []}
    for _ in range(num_examples):
        words, is_answer = task.sample(rng)
        ids = tokenizer.convert_tokens_to_ids(words)
        rows["input_ids"].append(ids)
        rows["attention_mask"].append([1] * len(ids))
        rows["labels"].append([i if a else -100 for i, a in zip(ids, is_answer)])
        rows["prompt"].append(" ".join(words[:-1]))
        rows["answer"].append(words[-1])
    return Dataset.from_dict(rows)


@torch.no_grad()
def answer_accuracy(model, dataset, batch_size: int = 256) -> float:
    """Fraction of answer positions predicted correctly (argmax of the previous position, teacher forcing)."""
    model.eval()
    correct = total = 0
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start : start + batch_size]
        ids = torch.tensor(batch["input_ids"], device=model.device)
        labels = torch.tensor(batch["labels"], device=model.device)[:, 1:]
        predicted = model(ids[:, :-1]).logits.argmax(-1)
        scored = labels != -100
        correct += ((predicted == labels) & scored).sum().item()
        total += scored.sum().item()
    return correct / total


def train_on_task(
    model,
    train_dataset,
    output_dir: str,
    max_steps: int,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
):
    """Train with `transformers.Trainer` (AdamW, linear warm-up/decay); returns the Trainer's TrainOutput."""
    from transformers import Trainer, TrainingArguments, default_data_collator

    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        max_steps=max_steps,
        learning_rate=learning_rate,
        weight_decay=0.0,
        warmup_steps=max(1, max_steps // 20),
        lr_scheduler_type="cosine",
        logging_steps=max(1, max_steps // 10),
        save_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress,
        dataloader_drop_last=True,
    )
    columns = ["input_ids", "attention_mask", "labels"]
    trainer = Trainer(
        model=model, args=args, train_dataset=train_dataset.select_columns(columns), data_collator=default_data_collator
    )
    return trainer.train()


def build_model(kind: str, vocab_size: int, seq_len: int, hidden_size: int, num_layers: int, pad_token_id: int):
    """Same width/depth for the three contenders: Hyena (order 2), H3, and transformers' GPT-2 (attention)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from .configuration_hyena import HyenaConfig
    from .modeling_hyena import HyenaForCausalLM

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=seq_len,
        embd_pdrop=0.0,
        pad_token_id=pad_token_id,
    )
    if kind == "hyena":
        return HyenaForCausalLM(HyenaConfig(**common, filter_order=64, filter_emb_dim=5, filter_sin_freq=10.0))
    if kind == "h3":
        return HyenaForCausalLM(HyenaConfig(**common, filter_type="h3", ssm_state_size=64))
    if kind == "gpt2":
        return GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab_size,
                n_embd=hidden_size,
                n_layer=num_layers,
                n_head=max(1, hidden_size // 32),
                n_inner=2 * hidden_size,
                n_positions=seq_len,
                embd_pdrop=0.0,
                resid_pdrop=0.0,
                attn_pdrop=0.0,
                pad_token_id=pad_token_id,
                bos_token_id=None,
                eos_token_id=None,
            )
        )
    raise ValueError(f"unknown model kind {kind!r}; choose hyena, h3 or gpt2")


def compare_models(
    task,
    kinds=("hyena", "h3", "gpt2"),
    steps: int = 2000,
    hidden_size: int = 128,
    num_layers: int = 2,
    train_examples: int = 20000,
    learning_rate: float = 3e-3,
    seed: int = 0,
    output_dir: str = "synthetic_output",
    progress: bool = True,
) -> list[dict]:
    """Train each model kind on ``task`` with the same data and budget; returns one row per model."""
    import json
    import time
    from pathlib import Path

    from transformers import set_seed

    tokenizer = make_tokenizer(task_words(task))
    train = build_dataset(task, tokenizer, train_examples, seed=seed)
    held_out = build_dataset(task, tokenizer, 1000, seed=seed + 1)
    seq_len = len(train[0]["input_ids"])
    rows = []
    for kind in kinds:
        set_seed(seed)
        model = build_model(kind, len(tokenizer), seq_len, hidden_size, num_layers, tokenizer.pad_token_id)
        start = time.perf_counter()
        train_on_task(
            model,
            train,
            str(Path(output_dir) / f"trainer_{kind}"),
            max_steps=steps,
            learning_rate=learning_rate,
            seed=seed,
            progress=progress,
        )
        rows.append(
            {
                "model": kind,
                "parameters": model.num_parameters(),
                "steps": steps,
                "train_seconds": time.perf_counter() - start,
                "held_out_accuracy": answer_accuracy(model, held_out),
            }
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "synthetic_results.json").write_text(json.dumps({"task": repr(task), "rows": rows}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.bar(
            [r["model"] for r in rows], [r["held_out_accuracy"] for r in rows], color=["C0", "C1", "C2"][: len(rows)]
        )
        ax.set(ylim=(0, 1), ylabel="held-out accuracy", title=type(task).__name__)
        fig.tight_layout()
        fig.savefig(out / "synthetic_results.png", dpi=120)
    except ImportError:
        pass
    return rows
