"""Many new tokens at once through a filled cache (a second turn of a conversation, a chunked prefill): the chunk
paths of ``hyena_hf.decoding`` against the same tokens fed through the token-by-token steps, and against the full
forward of context and chunk together. Exact (implicit filters), modal and H3 models of the same width and depth,
random weights, batch 1, no grad, ``logits_to_keep=1``. Prints ratios; the CPU model goes into the JSON.

    python benchmarks/bench_continuation.py [--context 4096] [--chunks 16 64 256 1024]
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
from hyena_hf.benchmarks.timing import cpu_model, median_seconds

FAMILIES = {
    "exact": {},
    "modal": {"filter_type": "modal", "modal_state_size": 16},
    "h3": {"filter_type": "h3", "ssm_state_size": 64},
}
THRESHOLDS = ("EXACT_CHUNK_MIN_TOKENS", "MODAL_CHUNK_MIN_TOKENS", "H3_CHUNK_MIN_TOKENS")


@torch.no_grad()
def continuation_seconds(model, ids: torch.Tensor, context: int, repeats: int) -> float:
    """Median time of feeding ``ids[:, context:]`` through a cache filled with ``ids[:, :context]`` (refilled for
    each repeat, untimed)."""
    times = []
    for _ in range(repeats):
        cache = model(ids[:, :context], use_cache=True, logits_to_keep=1).past_key_values
        start = time.perf_counter()
        model(ids[:, context:], past_key_values=cache, logits_to_keep=1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--chunks", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    defaults = {name: getattr(decoding, name) for name in THRESHOLDS}
    rows = []
    for family, overrides in FAMILIES.items():
        torch.manual_seed(0)
        total = args.context + max(args.chunks)
        model = bench_hyena(args.hidden_size, args.layers, total, **overrides)
        for chunk in args.chunks:
            ids = torch.randint(0, model.config.vocab_size, (1, args.context + chunk))
            row = {"family": family, "context": args.context, "new_tokens": chunk}
            try:
                for name in THRESHOLDS:  # every chunk through the steps
                    setattr(decoding, name, 1 << 62)
                row["token_by_token_s"] = continuation_seconds(model, ids, args.context, args.repeats)
            finally:
                for name, value in defaults.items():
                    setattr(decoding, name, value)
            row["hyena_hf_s"] = continuation_seconds(model, ids, args.context, args.repeats)
            with torch.no_grad():
                row["full_forward_s"] = median_seconds(
                    lambda: model(ids, use_cache=False, logits_to_keep=1), args.repeats
                )
            row["speedup_over_token_by_token"] = row["token_by_token_s"] / row["hyena_hf_s"]
            rows.append(row)
            print(
                f"{family:5s} {chunk:5d} new tokens after {args.context}: token by token "
                f"{row['token_by_token_s'] * 1e3:7.1f} ms, hyena-hf {row['hyena_hf_s'] * 1e3:6.1f} ms "
                f"({row['speedup_over_token_by_token']:.1f}x), full forward {row['full_forward_s'] * 1e3:6.1f} ms",
                flush=True,
            )
    result = {
        "command": f"python benchmarks/bench_continuation.py --context {args.context} --chunks "
        + " ".join(map(str, args.chunks)),
        "cpu": cpu_model(),
        "threads": args.threads,
        "torch": torch.__version__,
        "hidden_size": args.hidden_size,
        "layers": args.layers,
        "thresholds": defaults,
        "rows": rows,
    }
    out = Path(args.out) / "bench_continuation_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
