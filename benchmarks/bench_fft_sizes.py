"""Which FFT sizes the long convolution pads to (``hyena_hf.ops._fast_fft_size``), against the smallest 2^a 3^b 5^c
it used before: the time per point of a real FFT and its inverse at every 2^a 3^b 5^c size in a range, then, for every
sequence length L whose FFT (2L points) falls in it, the time of the size each rule picks over the fastest measured
size from 2L to 4L (averaged over the lengths, and the worst length), then whole-model forwards at lengths where the
two rules differ. Prints ratios; the CPU model goes into the JSON.

    python benchmarks/bench_fft_sizes.py
    python benchmarks/bench_fft_sizes.py --min-points 262144 --max-points 2200000 --model-lengths 150000
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from tqdm.auto import tqdm

import hyena_hf.ops as ops
from hyena_hf.benchmarks.models import bench_hyena
from hyena_hf.benchmarks.timing import cpu_model, interleaved_median_seconds, median_seconds


def smallest_5_smooth(n: int) -> int:
    """The rule before: the smallest 2^a 3^b 5^c >= n."""
    return ops.smooth_size(n)


def five_smooth_sizes(low: int, high: int) -> list[int]:
    """Every 2^a 3^b 5^c in [low, high], ascending."""
    sizes, odd5 = [], 1
    while odd5 <= high:
        odd = odd5
        while odd <= high:
            size = odd
            while size <= high:
                if size >= low:
                    sizes.append(size)
                size *= 2
            odd *= 3
        odd5 *= 5
    return sorted(sizes)


def seconds_per_point(size: int, repeats: int) -> float:
    """Median time of rfft + irfft of ``size`` points, per point and channel (enough channels for ~16 MB)."""
    channels = max(4, (4 << 20) // size)
    x = torch.randn(1, channels, size)
    spectrum = torch.fft.rfft(x)
    seconds = median_seconds(lambda: (torch.fft.rfft(x), torch.fft.irfft(spectrum, n=size)), repeats)
    return seconds / channels / size


def rule_costs(costs: dict, lengths: range) -> dict:
    """For each rule, the mean over ``lengths`` and the worst of (time at its size) / (fastest measured size in
    [2L, 4L]), from the measured per-point ``costs`` (time per point times size is the time per channel)."""
    sizes = sorted(costs)
    time = {size: costs[size] * size for size in sizes}
    out = {}
    for name, rule in (("smallest_5_smooth", smallest_5_smooth), ("hyena_hf", ops._fast_fft_size)):
        ratios = []
        for length in lengths:
            target = 2 * length
            best = min(time[s] for s in sizes if target <= s <= 2 * target)
            ratios.append(time[rule(target)] / best)
        out[name] = {"mean_over_fastest": statistics.fmean(ratios), "worst_over_fastest": max(ratios)}
    return out


def model_forwards(lengths: list[int], repeats: int) -> list[dict]:
    """Forward (no grad, batch 1, width 256, 4 layers) with either rule, interleaved."""
    torch.manual_seed(0)
    model = bench_hyena(256, 4, max(lengths))
    current = ops._fast_fft_size
    rows = []
    for length in lengths:
        ids = torch.randint(0, 50257, (1, length))

        def forward(rule):
            def run():
                ops._fast_fft_size = rule
                with torch.no_grad():
                    model(ids, logits_to_keep=1, use_cache=False)

            return run

        try:
            times = interleaved_median_seconds(
                {"smallest_5_smooth": forward(smallest_5_smooth), "hyena_hf": forward(current)}, repeats
            )
        finally:
            ops._fast_fft_size = current
        rows.append(
            {
                "length": length,
                "fft_points": {"smallest_5_smooth": smallest_5_smooth(2 * length), "hyena_hf": current(2 * length)},
                "seconds": times,
                "speedup": times["smallest_5_smooth"] / times["hyena_hf"],
            }
        )
        print(f"L={length}: forward {times['smallest_5_smooth'] * 1e3:.0f} -> {times['hyena_hf'] * 1e3:.0f} ms")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-points", type=int, default=2048)
    parser.add_argument("--max-points", type=int, default=140000)
    parser.add_argument("--model-lengths", type=int, nargs="*", default=[9841, 12500, 16401, 30000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sizes = five_smooth_sizes(args.min_points, 2 * args.max_points)
    costs = {size: seconds_per_point(size, args.repeats) for size in tqdm(sizes, desc="FFT sizes")}
    lengths = range(args.min_points // 2, args.max_points // 2 + 1)
    rules = rule_costs(costs, lengths)
    for name, row in rules.items():
        mean, worst = row["mean_over_fastest"], row["worst_over_fastest"]
        print(f"{name}: {mean:.3f}x the fastest size on average, worst {worst:.2f}x")
    ratio = rules["smallest_5_smooth"]["mean_over_fastest"] / rules["hyena_hf"]["mean_over_fastest"]
    print(
        f"FFT time, smallest 2^a 3^b 5^c / hyena-hf's sizes, over L = {lengths.start}..{lengths.stop - 1}: {ratio:.3f}"
    )
    result = {
        "command": "python benchmarks/bench_fft_sizes.py "
        + f"--min-points {args.min_points} --max-points {args.max_points} "
        + f"--model-lengths {' '.join(map(str, args.model_lengths))}",
        "cpu": cpu_model(),
        "threads": args.threads,
        "torch": torch.__version__,
        "seconds_per_point": {str(size): cost for size, cost in costs.items()},
        "rules": rules,
        "fft_time_old_over_new": ratio,
        "model_forwards": model_forwards(args.model_lengths, args.repeats) if args.model_lengths else [],
    }
    out = Path(args.out) / f"bench_fft_sizes_cpu_{args.min_points}_{args.max_points}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
