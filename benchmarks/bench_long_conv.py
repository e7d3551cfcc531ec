"""Long-convolution benchmark: Triton kernel vs the PyTorch reference (and torch.compile of it).

    python benchmarks/bench_long_conv.py [--lengths 1024 ... 65536] [--batch 8] [--channels 768 1024]
                                         [--dtypes bfloat16 float32] [--out benchmarks/results]

Operation: y = post * (causal_conv(pre * v, h) + D * pre * v), shapes (B, D, L). Reports forward and forward+backward
time, achieved bandwidth, the bandwidth floor (bytes that must move / measured copy bandwidth), peak memory above the
inputs (CUDA allocator counter; on CPU the profiler's allocation records) and speed-up ratios. On a machine without
CUDA it times the PyTorch paths only and says so. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyena_hf.benchmarks.timing import command_line, median_seconds, peak_memory_bytes
from hyena_hf.ops import long_conv_torch


def reference_conv(v, h, D, pre, post):
    """The original repositories' fftconv_ref, gated: FFT size exactly 2L, separate ops."""
    L = v.shape[-1]
    u = v * pre
    k_f = torch.fft.rfft(h.float(), n=2 * L) / (2 * L)
    u_f = torch.fft.rfft(u.float(), n=2 * L)
    y = torch.fft.irfft(u_f * k_f, n=2 * L, norm="forward")[..., :L]
    return ((y + u * D.unsqueeze(-1)) * post).to(v.dtype)


def timed(fn, device, repeats):
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, rep=repeats * 20) / 1e3
    return median_seconds(fn, repeats)


def copy_bandwidth(device, nbytes=1 << 28):
    x = torch.empty(nbytes // 4, device=device)
    y = torch.empty_like(x)
    seconds = timed(lambda: y.copy_(x), device, 5)
    return 2 * nbytes / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768, 65536])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, nargs="+", default=[768, 1024])
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    triton_ok = device.type == "cuda"
    if triton_ok:
        from hyena_hf.kernels import triton_long_conv
    else:
        print("no CUDA device: timing the PyTorch paths only (the Triton kernel needs a GPU to be timed)")
    compiled = torch.compile(reference_conv)
    floor_bw = copy_bandwidth(device)
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for channels in args.channels:
            for L in tqdm(args.lengths, desc=f"bench long-conv, {dtype_name}, C={channels}"):
                B = args.batch
                v, pre, post = (torch.randn(B, channels, L, device=device, dtype=dtype) for _ in range(3))
                h = torch.randn(channels, L, device=device) / L
                D = torch.randn(channels, device=device)
                inputs = [v, h, D, pre, post]
                impls = {"reference": reference_conv, "hyena_hf_torch": long_conv_torch, "compiled_reference": compiled}
                if triton_ok:  # one program per row up to MAX_FUSED_LEN, the multi-pass kernels beyond
                    impls["triton"] = triton_long_conv
                # bytes that must move (h and D are small): forward v, pre, post in and y out; the backward adds
                # dy, v, pre, post in and dv, d_pre, d_post out
                must_move = 4 * B * channels * L * v.element_size()
                row = {
                    "dtype": dtype_name,
                    "batch": B,
                    "channels": channels,
                    "length": L,
                    "bandwidth_floor_s": must_move / floor_bw,
                    "bandwidth_floor_fwdbwd_s": must_move * 11 / 4 / floor_bw,
                }
                if triton_ok:  # the timings only mean something if the kernel is right on this device
                    want = long_conv_torch(*[t.double() for t in inputs])
                    got = triton_long_conv(*inputs).double()
                    row["triton_max_rel_err"] = ((got - want).abs().max() / want.abs().max()).item()
                    del want, got
                for name, fn in impls.items():
                    try:
                        row[f"{name}_fwd_s"] = timed(lambda: fn(*inputs), device, args.repeats)
                        row[f"{name}_fwd_peak_bytes"] = peak_memory_bytes(lambda: fn(*inputs))
                        grads = [t.detach().requires_grad_(True) for t in inputs]

                        def fwd_bwd():
                            fn(*grads).float().sum().backward()

                        row[f"{name}_fwdbwd_s"] = timed(fwd_bwd, device, args.repeats)
                        row[f"{name}_fwdbwd_peak_bytes"] = peak_memory_bytes(fwd_bwd)
                        row[f"{name}_fwd_GBps"] = must_move / row[f"{name}_fwd_s"] / 1e9
                    except RuntimeError as exc:  # out of memory at the longest lengths
                        row[f"{name}_error"] = str(exc).splitlines()[0]
                for name in impls:
                    if name != "reference" and f"{name}_fwdbwd_s" in row and "reference_fwdbwd_s" in row:
                        row[f"{name}_fwdbwd_speedup"] = row["reference_fwdbwd_s"] / row[f"{name}_fwdbwd_s"]
                        row[f"{name}_fwd_speedup"] = row["reference_fwd_s"] / row[f"{name}_fwd_s"]
                rows.append(row)
                print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "bench_long_conv_" + (torch.cuda.get_device_name().replace(" ", "_") if triton_ok else "cpu") + ".json"
    (out / name).write_text(
        json.dumps(
            {
                "command": command_line("bench_long_conv.py", args),
                "device": str(device),
                "gpu": torch.cuda.get_device_name() if triton_ok else None,
                "copy_bandwidth_GBps": floor_bw / 1e9,
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
