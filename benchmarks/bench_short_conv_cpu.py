"""CPU: direct depthwise convolution vs real-FFT convolution for short L (sets hyena_hf.ops.DIRECT_CONV_MAX_LEN)."""
import torch, time, torch.nn.functional as F
import hyena_hf.ops as ops
ops.DIRECT_CONV_MAX_LEN = 0  # time the FFT path at every length
from hyena_hf.ops import causal_conv_torch
torch.set_num_threads(2)
def direct(u, h):  # what causal_conv_torch does for L <= DIRECT_CONV_MAX_LEN
    L = u.shape[-1]; k = h[..., :L]
    return F.conv1d(F.pad(u, (k.shape[-1]-1, 0)), k.flip(-1).unsqueeze(1), groups=u.shape[1])
def t(fn, *a):
    fn(*a); ts=[]
    for _ in range(7):
        s=time.perf_counter(); fn(*a); ts.append(time.perf_counter()-s)
    return sorted(ts)[3]
import json
rows = []
for B, C in [(1, 256), (8, 768)]:
    for L in [8, 16, 32, 64, 128, 256, 512]:
        u = torch.randn(B, C, L); h = torch.randn(C, L)
        assert torch.allclose(direct(u, h), causal_conv_torch(u, h), atol=1e-3)
        a, b = t(causal_conv_torch, u, h), t(direct, u, h)
        rows.append({"batch": B, "channels": C, "length": L, "fft_s": a, "direct_s": b, "fft_over_direct": a / b})
        print(B, C, L, f"fft {a*1e3:.3f} ms direct {b*1e3:.3f} ms ratio {a/b:.2f}")
json.dump({"command": "python benchmarks/bench_short_conv_cpu.py", "threads": 2, "rows": rows},
          open("benchmarks/results/bench_short_conv_cpu.json", "w"), indent=2)
