"""Per-token decode latency: recompute (no cache) vs exact HyenaCache vs modal recurrence vs GPT-2's KV cache.

    python benchmarks/bench_generate.py [--contexts 512 2048 8192 32768] [--batches 1 8] [--out benchmarks/results]

A Hyena LM (order 2) and a GPT-2 of the same width/depth, random weights (speed does not depend on them). For each
context length C and batch B: the cache is filled with C tokens, then ``--steps`` single-token steps are timed
(median). Recompute times one full forward over C tokens (what decoding without a cache costs per token). GPT-2's
KV cache is filled with random keys/values of the right shape (its prefill at 32K would cost O(C^2); decode cost
does not depend on the values). Writes JSON (+ a PNG plot when matplotlib is installed) and prints ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from hyena_hf import distill
from hyena_hf.benchmarks.models import bench_hyena, same_size_gpt2
from hyena_hf.benchmarks.timing import median_seconds, run_record


@torch.no_grad()
def hyena_decode(model, batch: int, context: int, steps: int) -> tuple[float, int]:
    ids = torch.randint(0, model.config.vocab_size, (batch, context))
    cache = model(ids, use_cache=True, logits_to_keep=1).past_key_values
    token = ids[:, -1:]
    per_step = []
    for _ in range(steps):
        start = time.perf_counter()
        out = model(token, past_key_values=cache, logits_to_keep=1)
        per_step.append(time.perf_counter() - start)
        token = out.logits[:, -1:].argmax(-1)
    return statistics.median(per_step), sum(cache.memory_bytes())


@torch.no_grad()
def recompute(model, batch: int, context: int, repeats: int) -> float:
    ids = torch.randint(0, model.config.vocab_size, (batch, context))
    return median_seconds(lambda: model(ids, use_cache=False, logits_to_keep=1), repeats, warmup=False)


@torch.no_grad()
def gpt2_decode(model, batch: int, context: int, steps: int) -> tuple[float, int]:
    cfg = model.config
    head_dim = cfg.n_embd // cfg.n_head
    cache = DynamicCache(config=cfg)
    for layer in range(cfg.n_layer):
        k = torch.randn(batch, cfg.n_head, context, head_dim)
        cache.update(k, torch.randn_like(k), layer)
    token = torch.randint(0, cfg.vocab_size, (batch, 1))
    per_step = []
    for step in range(steps):
        mask = torch.ones(batch, context + step + 1, dtype=torch.long)
        position = torch.full((batch, 1), context + step)
        start = time.perf_counter()
        out = model(token, past_key_values=cache, attention_mask=mask, position_ids=position, use_cache=True)
        per_step.append(time.perf_counter() - start)
        cache = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
    memory = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    return statistics.median(per_step), memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 2048, 8192, 32768])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modal-sizes", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    max_len = max(args.contexts) + args.steps + 1
    hyena = bench_hyena(args.hidden_size, args.layers, max_len)
    modal = {n: distill(hyena, n, length=min(max_len, 4096), progress=False, force=True)[0] for n in args.modal_sizes}
    gpt2 = same_size_gpt2(args.hidden_size, args.layers, max_len)
    rows = []
    for batch in args.batches:
        for context in tqdm(args.contexts, desc=f"bench generate, batch {batch}"):
            row = {"batch": batch, "context": context}
            row["recompute_s"] = recompute(hyena, batch, context, repeats=2 if context >= 8192 else 3)
            row["exact_cache_s"], row["exact_cache_bytes"] = hyena_decode(hyena, batch, context, args.steps)
            for n, model in modal.items():
                row[f"modal{n}_s"], row[f"modal{n}_bytes"] = hyena_decode(model, batch, context, args.steps)
            row["gpt2_kv_s"], row["gpt2_kv_bytes"] = gpt2_decode(gpt2, batch, context, args.steps)
            rows.append(row)
            print(
                f"B={batch:2d} C={context:6d}  recompute {row['recompute_s'] * 1e3:9.1f} ms  "
                f"exact {row['exact_cache_s'] * 1e3:7.2f} ms ({row['recompute_s'] / row['exact_cache_s']:6.1f}x)  "
                + "  ".join(f"modal{n} {row[f'modal{n}_s'] * 1e3:6.2f} ms" for n in modal)
                + f"  gpt2-kv {row['gpt2_kv_s'] * 1e3:6.2f} ms",
                flush=True,
            )
    summary = {}
    for batch in args.batches:
        sub = [r for r in rows if r["batch"] == batch]
        for n in modal:
            summary[f"B{batch}_modal{n}_flatness_{sub[0]['context']}_to_{sub[-1]['context']}"] = (
                sub[-1][f"modal{n}_s"] / sub[0][f"modal{n}_s"]
            )
        for r in sub:
            summary[f"B{batch}_C{r['context']}_exact_vs_recompute_speedup"] = r["recompute_s"] / r["exact_cache_s"]
            for n in modal:
                summary[f"B{batch}_C{r['context']}_modal{n}_vs_gpt2kv_speedup"] = r["gpt2_kv_s"] / r[f"modal{n}_s"]
    result = {
        **run_record("bench_generate.py", args, torch.device("cpu")),
        "rows": rows,
        "ratios": summary,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_generate_cpu.json").write_text(json.dumps(result, indent=2))
    for key, value in summary.items():
        print(f"{key}: {value:.2f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, axes = plt.subplots(1, len(args.batches), figsize=(6 * len(args.batches), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], args.batches):
        sub = [r for r in rows if r["batch"] == batch]
        ctx = [r["context"] for r in sub]
        series = {"recompute (no cache)": "recompute_s", "exact cache": "exact_cache_s", "GPT-2 KV cache": "gpt2_kv_s"}
        series.update({f"modal N={n}": f"modal{n}_s" for n in modal})
        for label, key in series.items():
            ax.plot(ctx, [r[key] * 1e3 for r in sub], marker="o", label=label)
        ax.set(xscale="log", yscale="log", xlabel="context length", ylabel="ms per token", title=f"batch {batch}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "bench_generate_cpu.png", dpi=120)


if __name__ == "__main__":
    main()
