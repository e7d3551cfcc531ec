"""The Triton FFT-convolution kernel (under TRITON_INTERPRET=1 on CPU) against float64 references."""

import os

import pytest
import torch

pytest.importorskip("triton")
from hyena_hf.kernels import (
    MAX_FUSED_LEN,
    fftconv_rows,
    fftconv_rows_multipass,  # noqa: E402
    filter_gradient_multipass,
    filter_spectrum,
    long_conv_backward,
    triton_long_conv,
)
from hyena_hf.kernels import backward as kernel_backward
from hyena_hf.kernels import dft as kernel_dft  # noqa: E402
from hyena_hf.kernels import fftconv as kernel_fftconv
from hyena_hf.kernels import multipass as kernel_multipass
from hyena_hf.ops import long_conv, long_conv_torch  # noqa: E402

from conftest import TEST_DEVICE, fixture_tensors, load_fixture_model  # noqa: E402
from test_long_conv import naive  # noqa: E402

if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("needs a GPU or TRITON_INTERPRET=1", allow_module_level=True)


def _inputs(B, C, L, Lh=None, gated=True, skip=True, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(B, C, L, generator=g)
    h = torch.randn(C, Lh or L, generator=g) / (Lh or L) ** 0.5
    D = torch.randn(C, generator=g) if skip else None
    pre = torch.randn(B, C, L, generator=g) if gated else None
    post = torch.randn(B, C, L, generator=g) if gated else None
    cast = lambda t: None if t is None else t.to(device=TEST_DEVICE, dtype=dtype)  # noqa: E731
    return cast(v), h.to(TEST_DEVICE), cast(D), cast(pre), cast(post)


def _reference64(v, h, D, pre, post):
    f = lambda t: None if t is None else t.double()
    if v.shape[-1] <= 64:
        return naive(v, h, D, pre, post)
    return long_conv_torch(f(v), f(h), f(D), f(pre), f(post))


@pytest.mark.parametrize("L", [1, 2, 3, 17, 100, 128, 255, 1000, 1024, 2048])
def test_forward_matches_float64_reference(L):
    B, C = (2, 3) if L < 1024 else (1, 2)
    for gated, skip in [(True, True), (False, False), (True, False)]:
        args = _inputs(B, C, L, gated=gated, skip=skip, seed=L)
        out = triton_long_conv(*args)
        ref = _reference64(*args)
        assert out.dtype == torch.float32 and out.shape == (B, C, L)
        assert (out.double() - ref).abs().max() <= 1e-5 * ref.abs().max(), (L, gated, skip)


def test_filter_shorter_and_longer_than_input():
    for Lh in (9, 300):
        args = _inputs(2, 3, 120, Lh=Lh, seed=Lh)
        ref = _reference64(*args)
        assert (triton_long_conv(*args).double() - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 1e-2)])
def test_half_precision_inputs(dtype, tol):
    args = _inputs(2, 3, 200, dtype=dtype, seed=3)
    out = triton_long_conv(*args)
    assert out.dtype == dtype
    ref = _reference64(*args)
    assert (out.double() - ref).abs().max() <= tol * ref.abs().max()


def test_every_output_element_is_written():
    v, h, D, pre, post = _inputs(2, 3, 333, seed=5)
    poisoned = torch.full_like(v, float("nan"))
    out = fftconv_rows(v, filter_spectrum(h, 333), D, pre, post, out=poisoned)
    assert torch.isfinite(out).all()


def _grads(fn, args, dy):
    """Gradients of <fn(*args), dy> for the inputs that are not None (inputs are detached copies)."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in args]
    out = fn(*leaves)
    present = [t for t in leaves if t is not None]
    return out, torch.autograd.grad(out, present, dy.to(out.dtype))


def _assert_gradients_match_float64(args, tol=1e-5):
    out = triton_long_conv(*args)
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(11)).to(out)
    _, got = _grads(triton_long_conv, args, dy)
    _, want = _grads(long_conv_torch, [None if t is None else t.double() for t in args], dy.double())
    names = [n for n, t in zip(["v", "h", "D", "pre", "post"], args) if t is not None]
    for name, g, w, t in zip(names, got, want, [t for t in args if t is not None]):
        assert g.shape == w.shape and g.dtype == t.dtype, name
        assert torch.isfinite(g).all(), name
        assert (g.double() - w).abs().max() <= tol * w.abs().max() + 1e-6, name


GATE_AND_SKIP_CASES = [(pre, post, skip) for pre in (False, True) for post in (False, True) for skip in (False, True)]


def _case_inputs(B, C, L, Lh, pre, post, skip, seed, dtype=torch.float32):
    v, h, D, pre_gate, post_gate = _inputs(B, C, L, Lh=Lh, seed=seed, dtype=dtype)
    return [v, h, D if skip else None, pre_gate if pre else None, post_gate if post else None]


@pytest.mark.parametrize("pre,post,skip", GATE_AND_SKIP_CASES)
def test_fused_backward_every_gate_and_skip_combination(pre, post, skip):
    # several batch rows, so the in-kernel batch reduction of dh and dD is exercised
    _assert_gradients_match_float64(_case_inputs(3, 2, 90, 90, pre, post, skip, seed=17))


@pytest.mark.parametrize("L,Lh", [(1, 1), (2, 2), (37, 37), (200, 50), (64, 100), (1000, 1000), (1024, 300)])
def test_gradients_match_autograd_through_float64_reference(L, Lh):
    B, C = (2, 3) if L < 1000 else (2, 1)
    _assert_gradients_match_float64(_case_inputs(B, C, L, Lh, True, True, True, seed=L))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_gradients(dtype):
    _assert_gradients_match_float64(_case_inputs(2, 3, 150, 150, True, True, True, seed=8, dtype=dtype), tol=1e-2)


def test_backward_engine_per_length_and_dtype():
    """The fused backward wherever both its kernels have a spill-free plan (every fused length for half data, up to
    L = 512 for float32), torch.fft for float32 beyond, the multi-pass kernels beyond the fused lengths."""
    for L in (1, 256, 257, 512, 513, 1024, 2048, MAX_FUSED_LEN + 1):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            engine = kernel_backward.backward_engine(L, dtype)
            if L > MAX_FUSED_LEN:
                assert engine is kernel_backward._multipass_backward
            elif dtype == torch.float32 and L > 512:
                assert engine is kernel_backward._torch_fft_backward, L
            else:
                assert engine is kernel_backward._fused_backward, (L, dtype)


@pytest.mark.parametrize("L", [256, 512, 1024, 2048])
def test_fused_backward_in_half_precision_at_every_transform_size(L):
    """Each size has its own plan (spectrum tiles, warps): every one is exercised."""
    args = _case_inputs(2, 2, L, L, True, True, True, seed=L + 9, dtype=torch.bfloat16)
    assert kernel_backward.backward_engine(L, torch.bfloat16) is kernel_backward._fused_backward
    _assert_gradients_match_float64(args, tol=1e-2)


@pytest.mark.parametrize("pre,post,skip", GATE_AND_SKIP_CASES)
def test_torch_fft_backward_every_gate_and_skip_combination(pre, post, skip):
    args = _case_inputs(3, 2, 600, 600, pre, post, skip, seed=29)
    assert kernel_backward.backward_engine(600, torch.float32) is kernel_backward._torch_fft_backward
    _assert_gradients_match_float64(args)


def test_filter_gradient_in_batch_splits(monkeypatch):
    """On a GPU the filter-gradient programs split the batch (more programs than channels); the partial gradients
    of the splits (the last one short) must add up to the whole."""
    monkeypatch.setattr(kernel_backward, "filter_gradient_splits", lambda batch, channels, tiles, device: 2)
    _assert_gradients_match_float64(_case_inputs(5, 2, 100, 100, True, True, True, seed=31))


@pytest.fixture
def multipass_everywhere(monkeypatch):
    """Send every length to the multi-pass kernels, with scratch so small that rows and channels come in several
    chunks (the last one ragged)."""
    monkeypatch.setattr(kernel_fftconv, "MAX_FUSED_LEN", 0)
    monkeypatch.setattr(kernel_multipass, "SCRATCH_BYTES", 3 * 6 * 512 * 4)  # 3 rows of the smallest transform


@pytest.mark.parametrize("pre,post,skip", GATE_AND_SKIP_CASES)
def test_multipass_backward_every_gate_and_skip_combination(multipass_everywhere, pre, post, skip):
    _assert_gradients_match_float64(_case_inputs(3, 4, 70, 70, pre, post, skip, seed=23))


@pytest.mark.parametrize("L,Lh", [(1, 1), (33, 10), (300, 400)])
def test_multipass_backward_lengths(multipass_everywhere, L, Lh):
    _assert_gradients_match_float64(_case_inputs(2, 5, L, Lh, True, True, True, seed=L + 3))


def test_multipass_forward_in_row_chunks(multipass_everywhere):
    args = _inputs(3, 4, 130, seed=12)
    ref = _reference64(*args)
    v, h, D, pre, post = args
    aux = torch.randn_like(v)
    aux_out = torch.full_like(v, float("nan"))
    out = fftconv_rows_multipass(
        v, filter_spectrum(h, 130), D, pre, post, out=torch.full_like(v, float("nan")), aux=aux, aux_out=aux_out
    )
    assert (out.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
    before_post = _reference64(v, h, D, pre, None) * aux.double()
    assert (aux_out.double() - before_post).abs().max() <= 1e-5 * before_post.abs().max()


@pytest.mark.parametrize("multipass", [False, True])
def test_backward_writes_every_gradient_element(request, monkeypatch, multipass):
    if multipass:
        request.getfixturevalue("multipass_everywhere")
    nan_empty_like = lambda t, **kw: torch.full_like(t, float("nan"), **kw)  # noqa: E731
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty_like", nan_empty_like)
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: real_empty(*a, **kw).fill_(float("nan")))
    v, h, D, pre, post = _inputs(2, 3, 77, seed=6)
    grads = long_conv_backward(torch.randn_like(v), v, h, D, pre, post)
    for name, g in zip(["v", "h", "D", "pre", "post"], grads):
        assert torch.isfinite(g).all(), name


def test_multipass_filter_gradient_sums_the_batch(multipass_everywhere):
    g_src, u_src = torch.randn(3, 4, 50, device=TEST_DEVICE), torch.randn(3, 4, 50, device=TEST_DEVICE)
    dh = filter_gradient_multipass(g_src, None, u_src, None)
    want = torch.stack(
        [
            sum(torch.dot(g_src[b, c, j:].double(), u_src[b, c, : 50 - j].double()) for b in range(3))
            for c in range(4)
            for j in range(50)
        ]
    ).view(4, 50)
    assert (dh.double() - want).abs().max() <= 1e-5 * want.abs().max()


def test_gradcheck_tiny():
    args = [t.requires_grad_(True) for t in _inputs(1, 2, 6, seed=1)]
    assert torch.autograd.gradcheck(triton_long_conv, args, eps=1e-2, atol=2e-3, rtol=2e-3, fast_mode=True)


@pytest.mark.parametrize("gated", [True, False])
def test_custom_op_under_torch_compile(gated):
    """fullgraph=True fails on a graph break; the backward runs through the op's fake (shape) registration too."""
    torch._dynamo.reset()
    args = _case_inputs(2, 3, 50, 50, gated, gated, gated, seed=2)
    compiled = torch.compile(triton_long_conv, fullgraph=True, backend="aot_eager")
    dy = torch.randn(2, 3, 50, device=TEST_DEVICE)
    out, grads = _grads(compiled, args, dy)
    want_out, want_grads = _grads(triton_long_conv, args, dy)
    assert torch.allclose(out, want_out, atol=1e-6)
    for got, want in zip(grads, want_grads):
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("name", ["safari_hyena_order3_attn", "h3_lm", "hyenadna_lm"])
def test_model_logits_with_triton_equal_torch_path(name):
    tensors = {k: v.to(TEST_DEVICE) for k, v in fixture_tensors(name).items()}
    model = load_fixture_model(name).to(TEST_DEVICE)
    ids = tensors["input_ids_short"]
    with torch.no_grad():
        torch_logits = model(ids).logits
        model.config.long_conv_impl = "triton"
        triton_logits = model(ids).logits
    assert (triton_logits - torch_logits).abs().max() < 1e-4
    assert (triton_logits - tensors["logits_short"][..., : model.config.vocab_size]).abs().max() < 5e-3


def test_gates_broadcast_over_channels_or_batch():
    """H3 passes its padding mask as a (B, 1, L) pre-gate: the kernels must see it expanded over the channels (read as
    (B, C, L) it was garbage, NaN in the output), and its gradient must come back summed to (B, 1, L)."""
    v, h, D, pre, post = _inputs(3, 4, 90, seed=21)
    pre = (torch.rand(3, 1, 90, generator=torch.Generator().manual_seed(5)) > 0.3).to(v)  # a padding mask
    post = post[:1]  # (1, C, L): broadcast over the batch
    args = [v, h, D, pre, post]
    out = triton_long_conv(*args)
    want = long_conv_torch(*[t.double() for t in args])
    assert out.shape == v.shape and (out.double() - want).abs().max() <= 1e-5 * want.abs().max()
    _assert_gradients_match_float64(args)


@pytest.mark.parametrize("name", ["h3_lm", "safari_hyena_order3_attn"])
def test_padded_batch_with_triton_equals_torch_path(name):
    """Left padding (H3 gates its convolutions with the padding mask): every output finite, real positions equal."""
    model = load_fixture_model(name).to(TEST_DEVICE)
    ids = fixture_tensors(name)["input_ids_short"].to(TEST_DEVICE)[:1].repeat(2, 1)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    with torch.no_grad():
        want = model(ids, attention_mask=mask, use_cache=False).logits
        model.config.long_conv_impl = "triton"
        got = model(ids, attention_mask=mask, use_cache=False).logits
    assert torch.isfinite(got).all()
    real = mask.bool()
    assert (got - want)[real].abs().max() < 1e-4


@pytest.mark.parametrize("name", ["safari_hyena_order3_attn", "h3_lm"])
def test_model_gradients_with_triton_equal_torch_path(name):
    ids = fixture_tensors(name)["input_ids_short"].to(TEST_DEVICE)
    grads = {}
    for impl in ("torch", "triton"):
        model = load_fixture_model(name).to(TEST_DEVICE)
        model.config.long_conv_impl = impl
        model(ids, labels=ids, use_cache=False).loss.backward()
        grads[impl] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads["torch"].keys() == grads["triton"].keys() and len(grads["torch"]) > 10
    for n, want in grads["torch"].items():
        assert (grads["triton"][n] - want).abs().max() <= 1e-4 * want.abs().max() + 1e-7, n


def test_dispatch_picks_triton_when_forced(monkeypatch):
    monkeypatch.delenv("HYENA_LONG_CONV_IMPL", raising=False)
    v, h, D, pre, post = _inputs(1, 2, 40, seed=9)
    assert torch.equal(long_conv(v, h, D, pre, post, impl="triton"), triton_long_conv(v, h, D, pre, post))
    monkeypatch.setenv("HYENA_LONG_CONV_IMPL", "triton")
    assert torch.equal(long_conv(v, h, D, pre, post, impl="torch"), triton_long_conv(v, h, D, pre, post))


@pytest.mark.parametrize("L", [5, 300, 1000])
def test_multipass_matches_reference_at_short_lengths(L):
    args = _inputs(2, 3, L, seed=L + 1)
    v, h, D, pre, post = args
    out = fftconv_rows_multipass(v, filter_spectrum(h, L), D, pre, post)
    ref = _reference64(*args)
    assert (out.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
    poisoned = torch.full_like(v, float("nan"))
    assert torch.isfinite(fftconv_rows_multipass(v, filter_spectrum(h, L), D, pre, post, out=poisoned)).all()


@pytest.mark.parametrize("L", [MAX_FUSED_LEN + 1, 5000, 65536])
def test_long_lengths_take_the_multipass_kernels(L):
    args = _inputs(1, 1, L, seed=7)
    out = triton_long_conv(*args)
    ref = _reference64(*args)
    assert (out.double() - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.slow
def test_one_million_tokens_take_the_multipass_kernels():
    """The multi-pass forward at 1M tokens (N = 2M: 1024 x 2048 four-step transform) against float64 torch.fft."""
    L = 1 << 20
    args = _inputs(1, 1, L, seed=21)
    ref = _reference64(*args)
    assert (triton_long_conv(*args).double() - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_multipass_gradients():
    L = MAX_FUSED_LEN + 100
    args = [t.requires_grad_(True) for t in _inputs(1, 2, L, seed=4)]
    out = triton_long_conv(*args)
    dy = torch.randn_like(out)
    grads = torch.autograd.grad(out, args, dy)
    ref_args = [t.detach().double().requires_grad_(True) for t in args]
    ref_grads = torch.autograd.grad(long_conv_torch(*ref_args), ref_args, dy.double())
    for got, want in zip(grads, ref_grads):
        assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max() + 1e-6


def test_dot_precision_choice(monkeypatch):
    monkeypatch.delenv("HYENA_TRITON_DOT_PRECISION", raising=False)
    assert kernel_dft.dot_precision(torch.float32) == ("ieee" if torch.version.hip else "tf32x3")
    assert kernel_dft.dot_precision(torch.bfloat16) == ("ieee" if torch.version.hip else "tf32")
    monkeypatch.setenv("HYENA_TRITON_DOT_PRECISION", "ieee")
    assert kernel_dft.dot_precision(torch.float16) == "ieee"
    args = _inputs(1, 2, 40, seed=3)
    assert (triton_long_conv(*args).double() - _reference64(*args)).abs().max() <= 1e-5 * _reference64(
        *args
    ).abs().max()
    monkeypatch.setenv("HYENA_TRITON_DOT_PRECISION", "fp8")
    with pytest.raises(ValueError, match="HYENA_TRITON_DOT_PRECISION"):
        triton_long_conv(*args)
