"""Exact decoding per new token: the convolution sum over the whole history (O(T d) per token) against relaxed FFT
convolution (``hyena_hf.decoding``: pending windows filled in power-of-two blocks, O(d log^2 T) amortised), after
contexts of 256 to 32K tokens. A Hyena LM (order 2) with random weights, no grad, ``logits_to_keep=1``, greedy.

The time per token is the mean over ``--steps`` consecutive steps, window openings and the largest blocks included
(the amortised cost, not a median that would skip them); the first step, which also evaluates the filters (both
paths) and opens the first window (relaxed: one FFT over the history), is reported on its own too. Both paths must
produce the same greedy tokens; the benchmark fails if they do not. Prints ratios and the context from which the
relaxed steps win (and its B d T, what ``EXACT_RELAXED_MIN_HISTORY`` counts); the device and the CPU model go into
the JSON.

    python benchmarks/bench_relaxed_decoding.py [--contexts 256 512 1024 4096 32768] [--batches 1 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import hyena_hf.decoding as decoding
from hyena_hf.benchmarks.models import bench_hyena
from hyena_hf.benchmarks.timing import run_record


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def decode(model, ids: torch.Tensor, steps: int, relaxed: bool) -> tuple[list[float], torch.Tensor, int]:
    """Seconds of each of ``steps`` greedy steps after a prefill of ``ids``, the tokens, the cache's bytes."""
    device = ids.device
    saved = dict(decoding.EXACT_RELAXED_MIN_HISTORY), decoding.EXACT_RELAXED_MIN_HISTORY_ELSEWHERE
    decoding.EXACT_RELAXED_MIN_HISTORY.clear()
    decoding.EXACT_RELAXED_MIN_HISTORY_ELSEWHERE = 0 if relaxed else 1 << 62
    try:
        cache = model(ids, use_cache=True, logits_to_keep=1).past_key_values
        token, tokens, seconds = ids[:, -1:], [], []
        for _ in range(steps):
            _sync(device)
            start = time.perf_counter()
            token = model(token, past_key_values=cache, logits_to_keep=1).logits[:, -1:].argmax(-1)
            _sync(device)
            seconds.append(time.perf_counter() - start)
            tokens.append(token)
    finally:
        decoding.EXACT_RELAXED_MIN_HISTORY.update(saved[0])
        decoding.EXACT_RELAXED_MIN_HISTORY_ELSEWHERE = saved[1]
    return seconds, torch.cat(tokens, dim=1), sum(cache.memory_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[256, 512, 1024, 4096, 32768])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = bench_hyena(args.hidden_size, args.layers, max(args.contexts) + max(args.steps, 4) + 1).to(device)
    rows = []
    for batch in args.batches:
        for context in args.contexts:
            ids = torch.randint(0, model.config.vocab_size, (batch, context), device=device)
            decode(model, ids[:, : min(64, context)], 4, relaxed=True)  # warm-up (allocator, kernels)
            summed_steps, tokens, summed_bytes = decode(model, ids, args.steps, relaxed=False)
            relaxed_steps, relaxed_tokens, relaxed_bytes = decode(model, ids, args.steps, relaxed=True)
            if not torch.equal(tokens, relaxed_tokens):
                raise SystemExit(f"batch {batch}, context {context}: the two paths decoded different tokens")
            summed, relaxed = statistics.fmean(summed_steps), statistics.fmean(relaxed_steps)
            row = {
                "batch": batch,
                "context": context,
                "history_elements": batch * args.hidden_size * context,  # B d T, what the threshold counts
                "sum_over_history_s_per_token": summed,
                "relaxed_s_per_token": relaxed,
                "speedup": summed / relaxed,
                "sum_over_history_first_step_s": summed_steps[0],
                "relaxed_first_step_s": relaxed_steps[0],
                "sum_over_history_s_per_later_token": statistics.fmean(summed_steps[1:]),
                "relaxed_s_per_later_token": statistics.fmean(relaxed_steps[1:]),
                "cache_bytes_sum_over_history": summed_bytes,
                "cache_bytes_relaxed": relaxed_bytes,
            }
            rows.append(row)
            later = row["sum_over_history_s_per_later_token"], row["relaxed_s_per_later_token"]
            print(
                f"B={batch:2d} context={context:6d}  per token: sum over history {summed * 1e3:7.2f} ms, "
                f"relaxed {relaxed * 1e3:7.2f} ms ({row['speedup']:.2f}x)  first step: "
                f"{summed_steps[0] * 1e3:.0f} / {relaxed_steps[0] * 1e3:.0f} ms  later tokens: "
                f"{later[0] * 1e3:.2f} / {later[1] * 1e3:.2f} ms"
                f"  cache {summed_bytes / 2**20:.1f} -> {relaxed_bytes / 2**20:.1f} MiB",
                flush=True,
            )
    crossover = {}
    for batch in args.batches:
        wins = [r["context"] for r in rows if r["batch"] == batch and r["speedup"] > 1]
        first = crossover[f"B{batch}"] = min(wins) if wins else None
        elements = None if first is None else batch * args.hidden_size * first
        print(f"B={batch}: relaxed faster from context {first} of {args.contexts} (B d T = {elements})")
    result = {
        **run_record("bench_relaxed_decoding.py", args, device),
        "steps": args.steps,
        "thresholds": {
            "EXACT_RELAXED_MIN_HISTORY": decoding.EXACT_RELAXED_MIN_HISTORY,
            "EXACT_RELAXED_MIN_HISTORY_ELSEWHERE": decoding.EXACT_RELAXED_MIN_HISTORY_ELSEWHERE,
            "RELAXED_WINDOW_DIVISOR": decoding.RELAXED_WINDOW_DIVISOR,
            "RELAXED_MIN_WINDOW": decoding.RELAXED_MIN_WINDOW,
        },
        "rows": rows,
        "relaxed_faster_from_context": crossover,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_relaxed_decoding_{device.type}_d{args.hidden_size}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
