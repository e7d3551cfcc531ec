"""CPU: direct depthwise convolution vs real-FFT convolution for short L (sets hyena_hf.ops.DIRECT_CONV_MAX_LEN).

python benchmarks/bench_short_conv_cpu.py
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

import hyena_hf.ops as ops
from hyena_hf.benchmarks.timing import median_seconds


def direct(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """What causal_conv_torch does for L <= DIRECT_CONV_MAX_LEN."""
    taps = h[..., : u.shape[-1]]
    return F.conv1d(F.pad(u, (taps.shape[-1] - 1, 0)), taps.flip(-1).unsqueeze(1), groups=u.shape[1])


def main() -> None:
    torch.set_num_threads(2)
    ops.DIRECT_CONV_MAX_LEN = 0  # time the FFT path at every length
    rows = []
    for batch, channels in [(1, 256), (8, 768)]:
        for length in [8, 16, 32, 64, 128, 256, 512]:
            u, h = torch.randn(batch, channels, length), torch.randn(channels, length)
            assert torch.allclose(direct(u, h), ops.causal_conv_torch(u, h), atol=1e-3)
            fft_s = median_seconds(lambda: ops.causal_conv_torch(u, h), 7)
            direct_s = median_seconds(lambda: direct(u, h), 7)
            rows.append(
                {
                    "batch": batch,
                    "channels": channels,
                    "length": length,
                    "fft_s": fft_s,
                    "direct_s": direct_s,
                    "fft_over_direct": fft_s / direct_s,
                }
            )
            print(
                f"B={batch} C={channels} L={length}: fft {fft_s * 1e3:.3f} ms, direct {direct_s * 1e3:.3f} ms, "
                f"ratio {fft_s / direct_s:.2f}"
            )
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/bench_short_conv_cpu.json").write_text(
        json.dumps({"command": "python benchmarks/bench_short_conv_cpu.py", "threads": 2, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
