"""The pure-PyTorch long convolution against a naive O(L^2) float64 convolution, and the dispatch rules."""

import pytest
import torch

from hyena_hf.ops import _fast_fft_size, conv_fft_size, long_conv, long_conv_torch, resolve_impl


def naive(v, h, D=None, pre=None, post=None):
    v, h = v.double(), h.double()
    u = v if pre is None else v * pre.double()
    B, C, L = u.shape
    y = torch.zeros_like(u)
    for t in range(L):
        for j in range(min(t + 1, h.shape[-1])):
            y[..., t] += h[:, j] * u[..., t - j]
    if D is not None:
        y = y + u * D.double()[:, None]
    return y if post is None else y * post.double()


@pytest.mark.parametrize("L", [1, 2, 3, 17, 64, 100])
@pytest.mark.parametrize("gated", [False, True])
def test_matches_naive_convolution(L, gated, device):
    g = torch.Generator().manual_seed(L)
    B, C = 2, 3
    v = torch.randn(B, C, L, generator=g).to(device)
    h = torch.randn(C, L, generator=g).to(device)
    D = torch.randn(C, generator=g).to(device)
    pre = torch.randn(B, C, L, generator=g).to(device) if gated else None
    post = torch.randn(B, C, L, generator=g).to(device) if gated else None
    ref = naive(v, h, D, pre, post)
    out = long_conv(v, h, D, pre, post, impl="torch")
    assert out.dtype == torch.float32
    assert (out.double() - ref).abs().max() <= 1e-5 * ref.abs().max() + 1e-6
    out64 = long_conv(
        v.double(),
        h.double(),
        D.double(),
        None if pre is None else pre.double(),
        None if post is None else post.double(),
    )
    assert (out64 - ref).abs().max() <= 1e-12 * ref.abs().max() + 1e-12


def test_filter_shorter_than_input_and_half_precision(device):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(1, 4, 50, generator=g).to(device)
    h = torch.randn(4, 9, generator=g).to(device)
    ref = naive(v, h)
    assert (long_conv(v, h) - ref).abs().max() < 1e-5
    D = torch.randn(4, generator=g).to(device)  # the skip rides on tap 0 of the filter's padded buffer
    assert (long_conv(v, h, D).double() - naive(v, h, D)).abs().max() < 1e-5
    out = long_conv(v.bfloat16(), h)
    assert out.dtype == torch.bfloat16
    assert (out.double() - ref).abs().max() < 1e-2 * ref.abs().max()


@pytest.mark.parametrize("L,taps", [(33, 1), (100, 5), (257, 40), (96, 96)])
def test_short_filter_forward_and_gradients_on_their_shorter_ffts(L, taps):
    """A filter of fewer taps than inputs is convolved by FFTs of about L + taps points, not 2L (H3's shift SSM): the
    output and all five gradients of the explicit backward against autograd through the naive float64 sum."""
    assert conv_fft_size(L, taps) >= L + taps - 1
    assert (conv_fft_size(L, taps) < 2 * L - 1) == (2 * taps <= L)
    g = torch.Generator().manual_seed(L + taps)
    args = [
        torch.randn(2, 3, L, generator=g),  # v
        torch.randn(3, taps, generator=g),  # h
        torch.randn(3, generator=g),  # D
        torch.randn(2, 3, L, generator=g),  # pre
        torch.randn(2, 3, L, generator=g),  # post
    ]
    ours = [a.clone().requires_grad_(True) for a in args]
    ref = [a.double().requires_grad_(True) for a in args]
    y, y_ref = long_conv_torch(*ours), naive(*ref)
    assert type(y.grad_fn).__name__ == "_LongConvTorchBackward"
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5 * y_ref.abs().max().item())
    dy = torch.randn(y.shape, generator=g)
    y.backward(dy)
    y_ref.backward(dy.double())
    for name, a, b in zip(("v", "h", "D", "pre", "post"), ours, ref):
        scale = b.grad.abs().max().item()
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-5, atol=1e-5 * scale, msg=name)
    with torch.no_grad():  # the blocked inference forward
        torch.testing.assert_close(long_conv_torch(*args).double(), y_ref.detach(), rtol=1e-5, atol=1e-4)


def _factor_counts(m: int) -> dict:
    counts = {}
    for p in (2, 3, 5):
        while m % p == 0:
            counts[p], m = counts.get(p, 0) + 1, m // p
    return counts if m == 1 else {}  # {} : not 5-smooth


def test_fast_fft_sizes():
    """The padded FFT size, against a search counting up from n: the smallest 5-smooth size up to 64 points; up to
    2^18 the smallest with at least 4 factors of 2 and at most 4 of 3; beyond, the next power of two when it is at
    most 1.5 n, else the smallest 5-smooth size with at least 2 factors of 2. Always n <= size < 2n."""

    def searched(n: int) -> int:
        m = n
        while True:
            counts = _factor_counts(m)
            if counts or m == 1:
                twos, threes = counts.get(2, 0), counts.get(3, 0)
                if n <= 64 or (n <= 1 << 18 and twos >= 4 and threes <= 4) or (n > 1 << 18 and twos >= 2):
                    return m
            m += 1

    for n in [1, 2, 7, 64, 65, 100, 257, 1000, 4097, 9842, 19683, 32805, 65537, 262144, 262145, 300001, 491521]:
        m = _fast_fft_size(n)
        assert n <= m < 2 * n
        power = 1 << (n - 1).bit_length()
        expected = power if n > 1 << 18 and 2 * power <= 3 * n else searched(n)
        assert m == expected, (n, m, expected)


def test_dispatch_rules(monkeypatch):
    monkeypatch.delenv("HYENA_LONG_CONV_IMPL", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert resolve_impl("auto", torch.device("cpu")) == "torch"
    assert resolve_impl("torch", torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeError, match="triton"):
        resolve_impl("triton", torch.device("cpu"))
    monkeypatch.setenv("HYENA_LONG_CONV_IMPL", "bogus")
    with pytest.raises(ValueError, match="HYENA_LONG_CONV_IMPL"):
        resolve_impl("auto", torch.device("cpu"))
    with pytest.raises(ValueError, match="long_conv expects"):
        long_conv(torch.zeros(2, 3), torch.zeros(3, 4))


def test_reference_is_what_the_dispatch_runs_on_cpu():
    v, h = torch.randn(2, 3, 20), torch.randn(3, 20)
    assert torch.equal(long_conv(v, h), long_conv_torch(v, h))


@pytest.mark.parametrize("L", [1, 7, 32, 33])
def test_direct_and_fft_paths_agree_with_naive(L):
    """Short inputs with many rows take the direct convolution on CPU (ops.DIRECT_CONV_MAX_LEN); both paths are
    exact."""
    from hyena_hf import ops

    g = torch.Generator().manual_seed(L)
    v, h = torch.randn(4, 512, L, generator=g), torch.randn(512, L, generator=g)
    assert (L <= ops.DIRECT_CONV_MAX_LEN) == (v.shape[0] * v.shape[1] >= ops.DIRECT_CONV_MIN_ROWS and L <= 32)
    ref = naive(v, h)
    assert (long_conv(v.double(), h.double()) - ref).abs().max() <= 1e-12 * ref.abs().max() + 1e-12
    assert (long_conv(v, h) - ref).abs().max() <= 1e-5 * ref.abs().max() + 1e-6


def test_auto_uses_triton_up_to_the_measured_crossover(monkeypatch):
    """'auto' on a GPU: Triton up to the length measured for that GPU and dtype (long_conv_crossover.json; float16
    falls back to the bfloat16 entry), PyTorch beyond it and wherever nothing was measured."""
    pytest.importorskip("triton")
    import hyena_hf.ops as ops

    monkeypatch.delenv("HYENA_LONG_CONV_IMPL", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Measured GPU")
    table = {"training": {"float32": 8192, "bfloat16": 1024}, "inference": {"float32": 2048}}
    monkeypatch.setattr(ops, "_crossover_table", lambda: {"Measured GPU": table})
    gpu = torch.device("cuda")
    assert resolve_impl("auto", gpu, 8192, torch.float32) == "triton"
    assert resolve_impl("auto", gpu, 8193, torch.float32) == "torch"
    assert resolve_impl("auto", gpu, 1024, torch.float16) == "triton"  # the same kernels as bfloat16
    assert resolve_impl("auto", gpu, 1025, torch.float16) == "torch"
    # the forward without autograd has its own measurement
    assert resolve_impl("auto", gpu, 2048, torch.float32, training=False) == "triton"
    assert resolve_impl("auto", gpu, 4096, torch.float32, training=False) == "torch"
    assert resolve_impl("auto", gpu, 16, torch.bfloat16, training=False) == "torch"  # not measured
    monkeypatch.setattr(ops, "_crossover_table", lambda: {"Measured GPU": {"training": {"float32": 0}}})
    assert resolve_impl("auto", gpu, 16, torch.float32) == "torch"  # measured: never faster
    assert resolve_impl("auto", gpu, 16, torch.bfloat16) == "torch"  # not measured
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Other GPU")
    assert resolve_impl("auto", gpu, 16, torch.float32) == "torch"
    assert resolve_impl("triton", gpu, 1 << 20, torch.float32) == "triton"  # forcing still wins
    # the kernels compute in float32: float64 stays on the PyTorch path, and forcing Triton there is an error
    assert resolve_impl("auto", gpu, 16, torch.float64) == "torch"
    with pytest.raises(ValueError, match="float64"):
        resolve_impl("triton", gpu, 16, torch.float64)


def test_crossover_from_benchmark_rows():
    from hyena_hf.benchmarks.crossover import crossover

    def row(dtype, length, triton, torch_s, err=1e-6):
        # up to 4K the PyTorch path trains through the reference on a GPU: its column is the rival there
        return {
            "dtype": dtype,
            "length": length,
            "triton_fwdbwd_s": triton,
            "reference_fwdbwd_s" if length <= 4096 else "hyena_hf_torch_fwdbwd_s": torch_s,
            "hyena_hf_torch_fwdbwd_s" if length <= 4096 else "reference_fwdbwd_s": 0.5 * triton,  # not the rival
            "triton_max_rel_err": err,
        }

    rows = [
        row("float32", 1024, 1, 2),
        row("float32", 2048, 1, 2),
        row("float32", 4096, 3, 2),
        row("float32", 8192, 1, 2),  # a win after a loss does not extend the range
        row("bfloat16", 1024, 1, 2),
        row("bfloat16", 2048, 1, 2, err=0.5),  # wrong results do not count
        row("float16", 1024, 1, 2),
        row("float16", 1024, 3, 2),
    ]  # every batch/channel count must win
    assert crossover(rows) == {"float32": 2048, "bfloat16": 1024, "float16": 0}
    # each side of 4K against its own rival (the other column, twice as fast as Triton, would make both lose)
    assert crossover([row("float32", 4096, 1, 2), row("float32", 8192, 1, 2)]) == {"float32": 8192}
    # inference: Triton's forward against the PyTorch path's forward (the blocked one) at every length
    forward = [
        {"dtype": "bfloat16", "length": 1024, "triton_fwd_s": 1, "hyena_hf_torch_fwd_s": 2, "reference_fwd_s": 0.5},
        {"dtype": "bfloat16", "length": 2048, "triton_fwd_s": 3, "hyena_hf_torch_fwd_s": 2},
    ]
    for r in forward:
        r["triton_max_rel_err"] = 1e-3
    assert crossover(forward, training=False) == {"bfloat16": 1024}


def test_which_backward_the_pytorch_path_trains_with():
    """CPU: the explicit recomputing backward; a GPU up to 4K: autograd through the reference (measured faster and
    leaner there on an H100); beyond: the explicit backward again, which keeps less memory."""
    from hyena_hf import ops

    gpu = torch.device("cuda")
    assert ops.stores_spectra_for_backward(gpu, 4096) and not ops.stores_spectra_for_backward(gpu, 4097)
    assert not ops.stores_spectra_for_backward(torch.device("cpu"), 64)
    v = torch.randn(1, 2, 64, requires_grad=True)
    y = long_conv_torch(v, torch.randn(2, 64))
    assert type(y.grad_fn).__name__ == "_LongConvTorchBackward"


def test_dispatch_tells_training_from_inference(monkeypatch):
    """long_conv asks for the call pattern's crossover: training where autograd records the call, else inference."""
    from hyena_hf import ops

    seen = []
    real = ops.resolve_impl
    monkeypatch.setattr(
        ops, "resolve_impl", lambda *a, **k: seen.append(a[4] if len(a) > 4 else k["training"]) or real(*a, **k)
    )
    v, h = torch.randn(1, 2, 40), torch.randn(2, 40)
    long_conv(v, h)
    long_conv(v.requires_grad_(True), h)
    with torch.no_grad():
        long_conv(v, h)
    assert seen == [False, True, False]
