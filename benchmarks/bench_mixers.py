"""Forward time per mixer family (implicit Hyena, modal Hyena, H3), without a cache and as a prefill that fills one
(plain ``model(ids)`` in eval mode), plus each family's forward+backward at 2K tokens; prints each family's time
relative to the implicit Hyena forward. Batch 1, ``logits_to_keep=1``, on the GPU when there is one; the CPU model
(and GPU name) go into the JSON. Run it on two commits to compare them
(``benchmarks/results/bench_mixers_cpu_before_after.json``).

    python benchmarks/bench_mixers.py --length 8192 [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hyena_hf.benchmarks.models import bench_hyena
from hyena_hf.benchmarks.timing import cpu_model, median_seconds

FAMILIES = {
    "implicit": {},
    "modal16": dict(filter_type="modal", modal_state_size=16),
    "h3": dict(filter_type="h3", ssm_state_size=64),
}


def measure(overrides: dict, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = bench_hyena(args.hidden_size, args.layers, args.length, **overrides).to(device, getattr(torch, args.dtype))
    ids = torch.randint(0, model.config.vocab_size, (1, args.length), device=device)
    result = {}
    for use_cache in (False, True):

        def forward():
            with torch.no_grad():
                model(ids, logits_to_keep=1, use_cache=use_cache)

        result["prefill_seconds" if use_cache else "forward_seconds"] = median_seconds(forward, args.repeats)
    short = ids[:, : min(args.length, 2048)]
    result["forward_backward_2k_seconds"] = median_seconds(
        lambda: model(short, use_cache=False).logits.sum().backward(), args.repeats
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {name: measure(overrides, args, device) for name, overrides in FAMILIES.items()}
    base = results["implicit"]["forward_seconds"]
    for name, result in results.items():
        seconds = result["forward_seconds"]
        print(
            f"{name:9s} forward {seconds * 1e3:8.1f} ms ({seconds / base:5.2f}x implicit)"
            f"  prefill {result['prefill_seconds'] * 1e3:8.1f} ms"
            f"  fwd+bwd {min(args.length, 2048)} tokens {result['forward_backward_2k_seconds'] * 1e3:8.1f} ms"
        )
    out = Path(args.out) / f"bench_mixers_{device.type}_{args.dtype}_{args.length}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    out.write_text(json.dumps({"cpu": cpu_model(), "gpu": gpu, "args": vars(args), "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
