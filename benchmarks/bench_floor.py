"""How far the CPU forward is from its GEMM floor: forward time, the profiler's share of time in GEMMs
(aten::mm / addmm / bmm / baddbmm and their in-place forms: the dense layers any implementation pays; a GEMM with a
fused activation counts only as the same GEMM timed alone) and time / GEMM floor, for Hyena and the same-size GPT-2
(SDPA). Inference (no grad), batch 1, ``logits_to_keep=1``; the CPU model goes into the JSON.

Two ratios: the profiler's (profiled time / profiled GEMM time, the measure the floor target was set in) and
wall time / replayed floor (the forward's unprofiled time over the sum of every GEMM of the forward timed alone,
shape by shape). They agree to a few percent up to 32K; at long lengths the profiler with ``record_shapes`` slows
the non-GEMM operators far more than the GEMMs (256K tokens, 2 layers: 6.0 s unprofiled, 9.8 s profiled), and
only the second ratio stays a measure of the model. A third figure, (replayed floor + time inside torch.fft) / floor,
is what the forward would take if every non-GEMM pass but the FFTs were free.

Repeated forwards at one length read the filter spectra kept from the previous ones (:mod:`hyena_hf.filter_spectra`);
``first_forward_seconds`` is the time of a forward computing every filter, as the first one at a new length does, and
``kept_spectra_bytes`` the memory the kept spectra hold between forwards (not part of ``peak_bytes``, the forward's
own allocations).

    python benchmarks/bench_floor.py --lengths 1024 2048 8192 16384 32768
    python benchmarks/bench_floor.py --lengths 262144 1048576 --layers 2 --vocab 12 --no-gpt2 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyena_hf import filter_spectra
from hyena_hf.benchmarks.models import bench_hyena, same_size_gpt2
from hyena_hf.benchmarks.timing import cpu_model, interleaved_median_seconds, median_seconds, peak_memory_bytes

# with their in-place forms (a GEMM accumulating into its output, e.g. fc2 into the residual stream)
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmm_", "aten::baddbmm_")
# A GEMM with its activation fused into the epilogue: only the time of the same GEMM without it counts as floor
# (replayed alone by unfused_gemm_seconds, once per input shapes), the epilogue's time counts as the model's own.
FUSED_GEMM_OPS = ("mkldnn::_linear_pointwise",)


def unfused_gemm_seconds(shapes: list, dtype: torch.dtype, repeats: int = 5) -> float:
    """Median time of ``addmm(bias, x, weight.T)`` for a fused linear's input shapes ``[x, weight, bias, ...]``."""
    x, weight = torch.randn(shapes[0], dtype=dtype), torch.randn(shapes[1], dtype=dtype)
    bias = torch.randn(shapes[2], dtype=dtype) if shapes[2] else None
    gemm = (lambda: x @ weight.t()) if bias is None else (lambda: torch.addmm(bias, x, weight.t()))
    return median_seconds(gemm, repeats)


def replayed_gemm_seconds(key: str, shapes: list, dtype: torch.dtype, repeats: int = 3) -> float:
    """Median time of one GEMM op ``key`` of :data:`GEMM_OPS` called alone on fresh contiguous tensors of the
    profiled input ``shapes`` (its operands' strides are not recorded)."""
    tensors = [torch.randn(shape, dtype=dtype) if shape else None for shape in (list(shapes[:3]) + [[]])[:3]]
    call = {
        "aten::mm": lambda a, b, _: torch.mm(a, b),
        "aten::bmm": lambda a, b, _: torch.bmm(a, b),
        "aten::addmm": torch.addmm,
        "aten::baddbmm": torch.baddbmm,
        "aten::addmm_": lambda c, a, b: c.addmm_(a, b),
        "aten::baddbmm_": lambda c, a, b: c.baddbmm_(a, b),
    }[key]
    return median_seconds(lambda: call(*tensors), repeats)


def replayed_seconds(event, dtype: torch.dtype, replays: dict) -> float:
    """Seconds of one call of a profiled GEMM or fused-linear ``event``'s GEMM alone, replayed once per op and input
    shapes (``replays`` keeps them for the next profiled call)."""
    key = (event.key, str(event.input_shapes))
    if key not in replays:
        replay = unfused_gemm_seconds if event.key in FUSED_GEMM_OPS else partial(replayed_gemm_seconds, event.key)
        replays[key] = replay(event.input_shapes, dtype)
    return replays[key]


def gemm_share(fn, repeats: int = 1, dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """Fraction of the profiled operator time that is the GEMM floor: the self time of the GEMM ops, plus for each
    fused linear + activation the time of its GEMM alone, over all ops' self time; the median over ``repeats``
    profiled calls (one call's share moves by several points on a shared VM). Also the replayed floor: seconds of
    every GEMM of one call timed alone (a fused linear as its GEMM alone)."""
    shares, events, replays = [], None, {}
    for _ in range(repeats):
        share, events = _gemm_share_once(fn, dtype, replays)
        shares.append(share)
    gemms = [e for e in events if e.key in GEMM_OPS or e.key in FUSED_GEMM_OPS]
    return statistics.median(shares), sum(replayed_seconds(e, dtype, replays) * e.count for e in gemms)


def _gemm_share_once(fn, dtype: torch.dtype, replays: dict):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    floor = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS)
    for event in events:
        if event.key in FUSED_GEMM_OPS:
            replayed = replayed_seconds(event, dtype, replays) * 1e6 * event.count
            floor += min(replayed, event.self_cpu_time_total)
    return floor / total, events


def fft_seconds(fn) -> float:
    """Wall time ``fn()`` spends inside ``torch.fft.rfft`` / ``irfft`` (timed around each call, no profiler): with the
    replayed floor it bounds what fusing every other non-GEMM pass could reach, (floor + FFTs) / floor."""
    spent = 0.0
    originals = {name: getattr(torch.fft, name) for name in ("rfft", "irfft")}

    def timed(original):
        def call(*args, **kwargs):
            nonlocal spent
            start = time.perf_counter()
            result = original(*args, **kwargs)
            spent += time.perf_counter() - start
            return result

        return call

    try:
        for name, original in originals.items():
            setattr(torch.fft, name, timed(original))
        fn()
    finally:
        for name, original in originals.items():
            setattr(torch.fft, name, original)
    return spent


def measure(model, length: int, vocab: int, repeats: int) -> dict:
    ids = torch.randint(0, vocab, (1, length))

    def forward():
        with torch.no_grad():
            model(ids, logits_to_keep=1, use_cache=False)

    def first_forward_at_the_length():  # computes every filter (reads and keeps no spectra)
        budget, filter_spectra.MAX_BYTES = filter_spectra.MAX_BYTES, 0
        try:
            forward()
        finally:
            filter_spectra.MAX_BYTES = budget

    forward()  # the second forward at this length keeps the spectra (the warm-up below is the first)
    timed = interleaved_median_seconds({"first": first_forward_at_the_length, "kept": forward}, repeats)
    first_forward, seconds = timed["first"], timed["kept"]
    share, replayed_floor = gemm_share(forward, repeats)
    ffts = fft_seconds(forward)
    return {
        "seconds": seconds,
        "first_forward_seconds": first_forward,
        "first_forward_over_replayed_floor": first_forward / replayed_floor,
        "kept_spectra_bytes": filter_spectra.kept_bytes(model),
        "gemm_share": share,
        "time_over_gemm_floor": 1 / share,
        "replayed_gemm_floor_seconds": replayed_floor,
        "wall_over_replayed_floor": seconds / replayed_floor,
        "fft_seconds": ffts,
        "floor_plus_ffts_over_floor": (replayed_floor + ffts) / replayed_floor,
        "peak_bytes": peak_memory_bytes(forward),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 8192, 16384, 32768])
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-gpt2", action="store_true", help="Hyena only (GPT-2 is quadratic at long lengths)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    longest = max(args.lengths)
    hyena = bench_hyena(args.hidden_size, args.layers, longest, vocab=args.vocab)
    gpt2 = None if args.no_gpt2 else same_size_gpt2(args.hidden_size, args.layers, longest, vocab=args.vocab)
    rows = []
    for length in tqdm(args.lengths, desc="bench floor"):
        row = {"length": length, "hyena": measure(hyena, length, args.vocab, args.repeats)}
        if gpt2 is not None:
            row["gpt2_sdpa"] = measure(gpt2, length, args.vocab, args.repeats)
        rows.append(row)
        line = (
            f"L={length:8d} hyena {row['hyena']['seconds'] * 1e3:10.1f} ms, GEMM share "
            f"{row['hyena']['gemm_share']:.1%}, {row['hyena']['time_over_gemm_floor']:.2f}x floor "
            f"(wall/replayed {row['hyena']['wall_over_replayed_floor']:.2f}x, FFTs alone "
            f"{row['hyena']['floor_plus_ffts_over_floor']:.2f}x), peak "
            f"{row['hyena']['peak_bytes'] / 2**20:.0f} MiB + kept spectra "
            f"{row['hyena']['kept_spectra_bytes'] / 2**20:.0f} MiB; first forward at the length "
            f"{row['hyena']['first_forward_seconds'] * 1e3:.1f} ms "
            f"({row['hyena']['first_forward_over_replayed_floor']:.2f}x replayed floor)"
        )
        if gpt2 is not None:
            line += (
                f" | gpt2-sdpa {row['gpt2_sdpa']['seconds'] * 1e3:10.1f} ms, "
                f"{row['gpt2_sdpa']['time_over_gemm_floor']:.2f}x floor "
                f"(wall/replayed {row['gpt2_sdpa']['wall_over_replayed_floor']:.2f}x)"
            )
        print(line, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"bench_floor_cpu_{min(args.lengths)}_{longest}.json"
    (out / name).write_text(
        json.dumps(
            {
                "command": "python benchmarks/bench_floor.py " + " ".join(sys.argv[1:]),
                "cpu": cpu_model(),
                "threads": args.threads,
                "torch": torch.__version__,
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
