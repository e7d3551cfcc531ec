"""Model-level speed: Hyena LM (hyena-hf) vs a plain original-style Hyena vs a same-size GPT-2 (SDPA).

    python benchmarks/bench_model.py [--lengths 1024 2048 4096 8192 16384 32768] [--hidden-size 256] [--layers 4]

Batch 1, random weights. "plain" is the same model (same weights) computed the way the original reference code does
it (benchmarks/plain_hyena.py: transposes around the projections, padded depthwise conv, FFT size exactly 2L with pad /
rfft / multiply / irfft / slice / skip as separate ops); its logits are checked against the model's first. Reports
forward (and forward+backward with --backward) time, timed in turn (hyena, plain, gpt2, hyena, ...) so that drifts of
a shared machine hit all alike, peak memory (CUDA counter on GPU, sampled resident set on CPU) and the ratios. Writes
JSON under benchmarks/results/. Repeated CPU forwards at one length read the filter spectra the previous ones kept
(:mod:`hyena_hf.filter_spectra`); "hyena_first_forward" times forwards that compute every filter, as the first
forward at a new length does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyena_hf import filter_spectra
from hyena_hf.benchmarks.models import bench_hyena, same_size_gpt2
from hyena_hf.benchmarks.plain_hyena import check_supported, plain_forward
from hyena_hf.benchmarks.timing import cpu_model, interleaved_median_seconds, peak_memory_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768])
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backward", action="store_true")
    parser.add_argument(
        "--gpt2-max-length",
        type=int,
        default=32768,
        help="skip GPT-2 above this length (its O(L^2) attention takes minutes on CPU)",
    )
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    max_len = max(args.lengths)
    torch.manual_seed(0)
    hyena = bench_hyena(args.hidden_size, args.layers, max_len, use_cache=False).to(device)
    gpt2 = same_size_gpt2(args.hidden_size, args.layers, max_len, use_cache=False).to(device)
    check_supported(hyena)
    with torch.no_grad():  # the plain reference must compute the same function before it is worth timing
        ids = torch.randint(0, 50257, (1, min(1024, max_len)), device=device)
        plain_diff = (plain_forward(hyena, ids) - hyena(ids).logits).abs().max().item()
    if plain_diff > 1e-3:
        raise RuntimeError(f"the plain reference disagrees with the model: max |logits diff| {plain_diff:.2e}")
    rows = []
    for L in tqdm(args.lengths, desc="bench model"):
        ids = torch.randint(0, 50257, (1, L), device=device)
        row = {"length": L}

        def run(model, plain=False):
            def fn():
                if args.backward:
                    logits = plain_forward(model, ids) if plain else model(ids).logits
                    torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).backward()
                else:
                    with torch.no_grad():
                        plain_forward(model, ids, 1) if plain else model(ids, logits_to_keep=1)

            return fn

        def first_forward_at_the_length():  # reads and keeps no filter spectra
            budget, filter_spectra.MAX_BYTES = filter_spectra.MAX_BYTES, 0
            try:
                run(hyena)()
            finally:
                filter_spectra.MAX_BYTES = budget

        contenders = {"hyena_s": run(hyena), "plain_hyena_s": run(hyena, plain=True)}
        if not args.backward and device.type == "cpu":
            contenders["hyena_first_forward_s"] = first_forward_at_the_length
        if L <= args.gpt2_max_length:
            contenders["gpt2_sdpa_s"] = run(gpt2)
        row.update(interleaved_median_seconds(contenders, args.repeats))
        for name, fn in contenders.items():
            row[name[: -len("_s")] + "_peak_mib"] = peak_memory_bytes(fn) / 2**20
        row["hyena_vs_plain"] = row["plain_hyena_s"] / row["hyena_s"]
        line = (
            f"L={L:6d} hyena {row['hyena_s'] * 1e3:9.1f} ms {row['hyena_peak_mib']:7.0f} MiB | plain "
            f"{row['plain_hyena_s'] * 1e3:9.1f} ms {row['plain_hyena_peak_mib']:7.0f} MiB "
            f"({row['hyena_vs_plain']:.2f}x)"
        )
        if "hyena_first_forward_s" in row:
            row["hyena_kept_spectra_mib"] = filter_spectra.kept_bytes(hyena) / 2**20
            row["hyena_first_forward_vs_plain"] = row["plain_hyena_s"] / row["hyena_first_forward_s"]
            line += (
                f" | hyena first forward {row['hyena_first_forward_s'] * 1e3:9.1f} ms "
                f"({row['hyena_first_forward_vs_plain']:.2f}x), kept spectra {row['hyena_kept_spectra_mib']:.0f} MiB"
            )
        if "gpt2_sdpa_s" in row:
            row["hyena_vs_gpt2"] = row["gpt2_sdpa_s"] / row["hyena_s"]
            line += (
                f" | gpt2-sdpa {row['gpt2_sdpa_s'] * 1e3:9.1f} ms {row['gpt2_sdpa_peak_mib']:7.0f} MiB "
                f"({row['hyena_vs_gpt2']:.2f}x)"
            )
        rows.append(row)
        print(line, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "fwdbwd" if args.backward else "fwd"
    (out / f"bench_model_{device.type}_{suffix}.json").write_text(
        json.dumps(
            {
                "command": f"python benchmarks/bench_model.py --lengths {' '.join(map(str, args.lengths))} "
                f"--hidden-size {args.hidden_size} --layers {args.layers} --threads {args.threads} "
                f"--repeats {args.repeats}" + (" --backward" if args.backward else ""),
                "device": str(device),
                "cpu": cpu_model(),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                "plain_max_abs_logits_diff": plain_diff,
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
