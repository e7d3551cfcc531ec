"""The CPU inference fast paths (no autograd) against the plain autograd-capable paths and float64 references:
channels-first projections, the shifted-add short filter, the channel-blocked long convolution and Hyena mixer, and
the row-blocked MLP. Block sizes are shrunk so that every path runs over several blocks with a ragged last one."""

import pytest
import torch
from torch import nn

import hyena_hf.ops as ops
import hyena_hf.ops_cpu as ops_cpu

from conftest import VARIANTS, left_padded_batch, tiny_model
from test_long_conv import naive


@pytest.mark.parametrize("L", [33, 100, 255, 1024])
@pytest.mark.parametrize("gated", [False, True])
def test_blocked_long_conv_matches_naive_and_autograd_path(L, gated, small_blocks):
    g = torch.Generator().manual_seed(L)
    B, C = 3, 5
    v, h, D = torch.randn(B, C, L, generator=g), torch.randn(C, L // 2 + 1, generator=g), torch.randn(C, generator=g)
    pre, post = (torch.randn(B, C, L, generator=g), torch.randn(B, C, L, generator=g)) if gated else (None, None)
    ref = naive(v, h, D, pre, post)
    with torch.no_grad():
        fast = ops.long_conv_torch(v, h, D, pre, post)
        fast64 = ops.long_conv_torch(*(None if t is None else t.double() for t in (v, h, D, pre, post)))
    assert fast.dtype == torch.float32 and fast.is_contiguous()
    assert (fast.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (fast64 - ref).abs().max() <= 1e-12 * ref.abs().max()
    reference = ops.long_conv_reference(v.requires_grad_(), h, D, pre, post)  # the autograd path
    assert torch.allclose(fast, reference.detach(), rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    with torch.no_grad():
        half = ops.long_conv_torch(v.bfloat16(), h, D, None if pre is None else pre.bfloat16(), post)
    assert half.dtype == torch.bfloat16
    assert (half.double() - ref).abs().max() <= 2e-2 * ref.abs().max()


def test_fft_buffers_reused_across_calls_stay_correct(small_blocks):
    """One workspace through calls whose filter length, input length, channel and batch counts change: every result
    equals the naive convolution (a stale column in a reused zero-padded buffer would leak into it)."""
    workspace = {}
    g = torch.Generator().manual_seed(11)
    calls = [(2, 5, 100, 100), (2, 5, 100, 40), (1, 3, 100, 100), (3, 7, 100, 7), (2, 5, 60, 60)]
    for B, C, L, taps in calls + [(2, 5, 60, 0)] * 2:  # a filter without taps twice: tap 0 holds only the skip
        v, h, D = torch.randn(B, C, L, generator=g), torch.randn(C, taps, generator=g), torch.randn(C, generator=g)
        pre, post = torch.randn(B, C, L, generator=g), torch.randn(B, C, L, generator=g)
        with torch.no_grad():
            got = ops.long_conv_torch(v, h, D, pre, post, workspace=workspace)
        ref = naive(v, h, D, pre, post)
        assert (got.double() - ref).abs().max() <= 1e-5 * ref.abs().max(), (B, C, L, taps)
    assert {"fft_input", "fft_filter"} <= workspace.keys()


def random_biases(model: nn.Module) -> nn.Module:
    """``model`` with every bias drawn at random (they start at zero, which would hide a bias handled wrongly)."""
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model


@pytest.mark.parametrize("taps", [1, 2, 3, 5])
@pytest.mark.parametrize("L", [1, 2, 4, 40])
def test_short_filter_of_a_projection_without_its_bias(taps, L):
    """The projection bias folded through the short filter == the filter of the biased projection (zeros before the
    sequence, bias included), in float64; with and without the filter's own bias."""
    generator = torch.Generator().manual_seed(taps * 10 + L)
    projected, weight = (
        torch.randn(2, 6, L, generator=generator, dtype=torch.float64),
        torch.randn(6, taps, dtype=torch.float64, generator=generator),
    )
    projection_bias, bias = (
        torch.randn(6, generator=generator, dtype=torch.float64),
        torch.randn(6, generator=generator, dtype=torch.float64),
    )
    for filter_bias in (bias, None):
        expected = ops_cpu.shifted_depthwise_conv(
            projected + projection_bias[:, None], weight, filter_bias, torch.empty_like(projected)
        )
        got = ops_cpu.short_filter_of_projection(
            projected, projection_bias, weight, filter_bias, torch.empty_like(projected)
        )
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("taps", [1, 2, 3, 5])
@pytest.mark.parametrize("L", [1, 2, 4, 40])
def test_shifted_short_filter_equals_the_convolution(taps, L):
    torch.manual_seed(taps * 100 + L)
    conv = nn.Conv1d(6, 6, taps, groups=6, padding=taps - 1)
    u = torch.randn(2, 6, L)
    expected = conv(u)[..., :L]
    with torch.no_grad():
        assert torch.allclose(ops_cpu.causal_short_conv(conv, u), expected, atol=1e-6)
    conv.bias = None
    with torch.no_grad():
        assert torch.allclose(ops_cpu.causal_short_conv(conv, u), conv(u)[..., :L], atol=1e-6)


def test_channels_first_projection_equals_the_module():
    torch.manual_seed(0)
    linear, x = nn.Linear(8, 12), torch.randn(3, 5, 8)
    assert torch.allclose(ops_cpu.linear_channels_first(linear, x), linear(x).transpose(1, 2), atol=1e-6)
    calls = []
    linear.register_forward_hook(lambda *args: calls.append(1))  # hooked modules are called, not bypassed
    assert torch.allclose(ops_cpu.linear_channels_first(linear, x), linear(x).transpose(1, 2), atol=1e-6)
    assert len(calls) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False, "strided"])
@pytest.mark.parametrize("onednn", [True, False])
def test_row_blocked_mlp_equals_the_module(dtype, bias, onednn, small_blocks, monkeypatch):
    """The MLP's inference engine (fc1 with the tanh-GELU fused by oneDNN, or the in-place GELU) against its twin,
    the module path, computed in float64; also with non-contiguous weights and bias (oneDNN misreads a strided
    bias)."""
    if dtype == torch.bfloat16 and onednn and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no oneDNN bfloat16 support")
    from hyena_hf.modeling_hyena import HyenaMLP

    torch.manual_seed(0)
    mlp = HyenaMLP(tiny_model().config)
    if not bias:
        mlp.fc1.bias = mlp.fc2.bias = None
    x = torch.randn(2, 19, mlp.fc1.in_features)
    expected = mlp.double()(x.double())
    mlp, x = mlp.to(dtype), x.to(dtype)
    if bias == "strided":  # the same values in non-contiguous storage
        mlp.fc1.bias = nn.Parameter(torch.stack([mlp.fc1.bias.detach()] * 2, dim=1)[:, 0])
        mlp.fc1.weight = nn.Parameter(mlp.fc1.weight.detach().t().contiguous().t())
        assert not mlp.fc1.bias.is_contiguous() and not mlp.fc1.weight.is_contiguous()
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", onednn)
    with torch.no_grad():
        assert ops_cpu.onednn_fuses(x, mlp.fc1.weight) == (onednn and torch.backends.mkldnn.is_available())
        fast = ops_cpu.mlp_inference(mlp, x)
    assert fast.dtype == dtype and fast.shape == expected.shape
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (fast.double() - expected).abs().max() <= tol * expected.abs().max()


def test_filter_engines_equal_their_references(monkeypatch):
    """The implicit filter's inference engines: sine layer in place, decay in column chunks, rows projected into a
    given buffer; each equal to its out-of-place reference, with the inputs a caller holds left intact."""
    monkeypatch.setattr(ops_cpu, "DECAY_CHUNK_COLUMNS", 7)
    torch.manual_seed(0)
    linear, x, freq = nn.Linear(5, 6), torch.randn(1, 30, 5), torch.rand(1, 6) * 10
    expected = torch.sin(freq * linear(x))
    with torch.no_grad():
        assert torch.equal(ops_cpu.sine_of_linear(linear, x, freq, torch.float32), expected)
        h, rate, t = torch.randn(4, 30), torch.rand(4), torch.linspace(0, 1, 30)
        reference = h * (torch.exp(-torch.outer(rate, t)) + 0.3)
        assert torch.allclose(ops_cpu.scale_by_decay(h.clone(), rate, t, 0.3), reference, rtol=1e-6, atol=0)
        hooked = nn.Linear(5, 6)
        captured = []
        hooked.register_forward_hook(lambda module, args, output: captured.append(output.clone()) or None)
        kept = []
        hooked.register_forward_hook(lambda module, args, output: kept.append(output))
        y = ops_cpu.sine_of_linear(hooked, x, freq, torch.float32)
        assert torch.equal(kept[0], captured[0])  # a hooked module's output is not overwritten
        assert torch.allclose(y, torch.sin(freq * captured[0]))
    model = tiny_model()
    implicit = model.backbone.layers[0].mixer.filter
    with torch.no_grad():
        features = implicit.features(20)
        whole = implicit.filters_for(features, slice(None))
        out = torch.full((6, 20), float("nan"))
        assert implicit.filters_for(features, slice(2, 8), out).data_ptr() == out.data_ptr()
        assert torch.allclose(out, whole[2:8], rtol=1e-6, atol=1e-7)
    with torch.enable_grad():
        recorded = implicit.filters_for(implicit.features(20), slice(None))
    assert recorded.requires_grad and torch.allclose(recorded.detach(), whole, rtol=1e-6, atol=1e-7)


def _count_blocked_calls(monkeypatch):
    calls = []
    original = ops_cpu.hyena_mixer_in_channel_blocks
    monkeypatch.setattr(
        ops_cpu, "hyena_mixer_in_channel_blocks", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    )
    return calls


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_inference_paths_equal_the_autograd_path(variant, small_blocks, monkeypatch):
    """no_grad forward (blocked mixer, row-blocked MLP, shifted short filter) == the forward that autograd records,
    with and without left padding, in float32 and float64, all biases non-zero."""
    model = random_biases(tiny_model(**VARIANTS[variant]))
    calls = _count_blocked_calls(monkeypatch)
    ids, mask = left_padded_batch(37, 9, seed=3)
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        for attention_mask in (None, mask):
            with torch.no_grad():
                fast = model(ids, attention_mask=attention_mask, use_cache=False).logits
            recorded = model(ids, attention_mask=attention_mask, use_cache=False).logits
            assert recorded.requires_grad
            tol = 1e-5 if dtype == torch.float32 else 1e-10
            assert (fast - recorded.detach()).abs().max() <= tol * recorded.abs().max()
    hyena_layers = sum(block.mixer_type in ("implicit", "modal") for block in model.backbone.layers)
    assert len(calls) == 4 * hyena_layers  # 2 dtypes x 2 masks, every Hyena layer took the blocked path


def test_left_padded_batch_equals_each_sequence_alone_without_cache(small_blocks):
    model = tiny_model(hyena_order=3)
    long, short = torch.randint(1, 50, (1, 30)), torch.randint(1, 50, (1, 21))
    batch = torch.cat([long, torch.cat([torch.zeros(1, 9, dtype=torch.long), short], 1)])
    mask = (torch.arange(30)[None] >= torch.tensor([[0], [9]])).long()
    with torch.no_grad():
        together = model(batch, attention_mask=mask, use_cache=False).logits
        alone = [model(long, use_cache=False).logits, model(short, use_cache=False).logits]
    assert torch.allclose(together[0], alone[0][0], atol=1e-5)
    assert torch.allclose(together[1, 9:], alone[1][0], atol=1e-5)


def test_hooked_or_training_models_use_the_module_path(monkeypatch):
    model = tiny_model()
    calls = _count_blocked_calls(monkeypatch)
    ids = torch.randint(1, 50, (1, 16))
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits
    assert len(calls) == 2
    seen = []
    model.backbone.layers[0].mixer.in_proj.register_forward_pre_hook(lambda *args: seen.append(1))
    with torch.no_grad():
        hooked = model(ids, use_cache=False).logits
    assert len(calls) == 3 and seen == [1]  # layer 0 ran its hooked in_proj as a module; layer 1 stayed blocked
    assert torch.allclose(hooked, expected, atol=1e-5)


def _conv_inputs(B, C, L, taps, gated, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    pre, post = (make(B, C, L), make(B, C, L)) if gated else (None, None)
    return [make(B, C, L), make(C, taps), make(C), pre, post]


@pytest.mark.parametrize("L,taps", [(33, 33), (100, 40), (255, 300)])
@pytest.mark.parametrize("gated", [False, True])
def test_explicit_backward_matches_float64_autograd(L, taps, gated, small_blocks):
    """Gradients of all five inputs from the blocked backward (float32) vs autograd through the reference (float64),
    for filters shorter and longer than the input, over several channel blocks."""
    args = _conv_inputs(3, 5, L, taps, gated, seed=L)
    inputs = [a.requires_grad_() for a in args if a is not None]
    dy = torch.randn(3, 5, L, generator=torch.Generator().manual_seed(7))
    grads = torch.autograd.grad(ops.long_conv_torch(*args), inputs, dy)
    args64 = [None if a is None else a.detach().double().requires_grad_() for a in args]
    inputs64 = [a for a in args64 if a is not None]
    expected = torch.autograd.grad(ops.long_conv_reference(*args64), inputs64, dy.double())
    for grad, ref in zip(grads, expected):
        assert grad.dtype == torch.float32 and grad.shape == ref.shape
        assert (grad.double() - ref).abs().max() <= 1e-5 * ref.abs().max(), (
            grad.shape,
            (grad.double() - ref).abs().max(),
        )


def test_explicit_backward_gradcheck_and_partial_and_broadcast_gates(small_blocks):
    args = _conv_inputs(2, 3, 40, 40, True, seed=1, dtype=torch.float64)
    assert torch.autograd.gradcheck(ops.long_conv_torch, [a.requires_grad_() for a in args])
    # only some inputs need gradients; a padding-mask-like gate broadcast over channels gets its own shape back
    v, h, D, _, post = (a.detach() for a in args)
    mask = (torch.rand(2, 1, 40, generator=torch.Generator().manual_seed(2)) > 0.3).double().requires_grad_()
    h.requires_grad_()
    out = ops.long_conv_torch(v, h, D, mask, post)
    dh, d_mask = torch.autograd.grad(out.sum(), [h, mask])
    ref = ops.long_conv_reference(v, h, D, mask, post)
    ref_dh, ref_mask = torch.autograd.grad(ref.sum(), [h, mask])
    assert d_mask.shape == (2, 1, 40)
    assert torch.allclose(dh, ref_dh, atol=1e-10) and torch.allclose(d_mask, ref_mask, atol=1e-10)
    assert torch.autograd.gradcheck(
        lambda v_: ops.long_conv_torch(v_, h.detach(), None, mask.detach(), None), [v.requires_grad_()]
    )


def test_training_step_gradients_equal_the_reference_path(monkeypatch):
    """A whole model's parameter gradients with the explicit backward == with autograd through the reference."""
    model = tiny_model(hyena_order=3, max_position_embeddings=64).train()
    ids = torch.randint(1, 50, (2, 48), generator=torch.Generator().manual_seed(0))
    model(ids, labels=ids).loss.backward()
    fast = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    monkeypatch.setattr(ops, "_LongConvTorch", type("Reference", (), {"apply": staticmethod(ops.long_conv_reference)}))
    model(ids, labels=ids).loss.backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(fast[name], p.grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("taps", [1, 3, 4])
def test_shifted_short_filter_gradients_equal_the_convolution(taps):
    """Under autograd on CPU the short filter has its own backward: gradients of u, weight and bias == nn.Conv1d's."""
    torch.manual_seed(taps)
    conv = nn.Conv1d(5, 5, taps, groups=5, padding=taps - 1).double()
    u = torch.randn(2, 5, 23, dtype=torch.float64, requires_grad=True)
    out = ops_cpu.causal_short_conv(conv, u)
    assert out.grad_fn is not None and "ShiftedShortConv" in type(out.grad_fn).__name__
    dy = torch.randn_like(out)
    grads = torch.autograd.grad(out, [u, conv.weight, conv.bias], dy)
    expected = torch.autograd.grad(conv(u)[..., :23], [u, conv.weight, conv.bias], dy)
    for grad, ref in zip(grads, expected):
        assert torch.allclose(grad, ref, atol=1e-12)
    short = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)  # shorter than the filter
    assert torch.autograd.gradcheck(
        lambda x, w, b: ops_cpu.ShiftedShortConv.apply(x, w, b),
        [short, conv.weight[:, 0].detach().clone().requires_grad_(), conv.bias.detach().clone().requires_grad_()],
    )


def test_out_argument_writes_the_result_in_place(small_blocks):
    v, h, D, pre, post = _conv_inputs(2, 5, 70, 70, True, seed=5)
    expected = ops.long_conv_torch(v, h, D, pre, post)
    for dtype in (torch.float32, torch.bfloat16):
        out = torch.full((2, 5, 70), float("nan"), dtype=dtype)
        with torch.no_grad():
            result = ops.long_conv_torch(v.to(dtype), h, D, pre.to(dtype), post.to(dtype), out=out)
        assert result.data_ptr() == out.data_ptr() and not out.isnan().any()
        assert torch.allclose(out.float(), expected, rtol=2e-2 if dtype == torch.bfloat16 else 1e-6, atol=5e-2)
    with pytest.raises(ValueError, match="out="):
        ops.long_conv_torch(v, h, D, pre, post, out=torch.empty(2, 5, 69))


@pytest.fixture
def in_place_residuals(monkeypatch):
    """The in-place residual sums at every size (normally from 32 MB per tensor)."""
    monkeypatch.setattr(ops_cpu, "IN_PLACE_RESIDUAL_MIN_BYTES", 0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_inference_residual_adds_leave_inputs_and_returned_states_intact(variant, in_place_residuals):
    """Inference writes each residual sum into the branch output (no new (B, L, d) tensor per add): the caller's
    inputs_embeds and every returned hidden state must still equal what the autograd path returns."""
    model = tiny_model(**VARIANTS[variant])
    embeds = torch.randn(2, 19, model.config.hidden_size, generator=torch.Generator().manual_seed(4))
    before = embeds.clone()
    with torch.no_grad():
        fast = model(inputs_embeds=embeds, output_hidden_states=True, use_cache=False)
    assert torch.equal(embeds, before)
    recorded = model(inputs_embeds=embeds.clone().requires_grad_(), output_hidden_states=True, use_cache=False)
    assert len(fast.hidden_states) == len(recorded.hidden_states) == model.config.num_hidden_layers + 1
    assert torch.equal(fast.hidden_states[0], before)
    for got, want in zip(fast.hidden_states + (fast.logits,), recorded.hidden_states + (recorded.logits,)):
        assert torch.allclose(got, want.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hooks_keep_the_outputs_they_saw(variant, in_place_residuals):
    """With a forward hook anywhere (activation capture), inference never writes into an output a hook was given:
    every kept output still holds what it held when the hook ran, and the logits equal the hook-free run's."""
    model = tiny_model(**VARIANTS[variant])
    ids = torch.randint(1, 50, (2, 23), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits
    kept = []

    def keep(module, args, output):
        for tensor in output if isinstance(output, tuple) else (output,):
            if torch.is_tensor(tensor):
                kept.append((tensor, tensor.clone()))

    for name in ("mixer", "mlp"):
        getattr(model.backbone.layers[0], name).register_forward_hook(keep)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(keep)
    model.backbone.layers[-1].register_forward_hook(keep)
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits
    assert len(kept) >= 4
    assert all(torch.equal(tensor, snapshot) for tensor, snapshot in kept)
    assert torch.allclose(logits, expected, rtol=1e-6, atol=1e-6)


def _count_backbone_engine_calls(monkeypatch):
    import hyena_hf.cpu_backbone as cpu_backbone
    import hyena_hf.modeling_hyena as modeling

    calls = []
    original = modeling.backbone_forward
    monkeypatch.setattr(modeling, "backbone_forward", lambda *args: calls.append(1) or original(*args))
    return cpu_backbone, calls


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_backbone_engine_equals_the_module_path(variant, small_blocks, monkeypatch):
    """The whole-backbone CPU engine (blocks in reused buffers) against its twin, the blocks called one by one, in
    float32 and float64, with and without left padding; the caller's embeddings stay intact."""
    cpu_backbone, calls = _count_backbone_engine_calls(monkeypatch)
    monkeypatch.setattr(cpu_backbone, "MIN_TENSOR_BYTES", 0)
    model = random_biases(tiny_model(**VARIANTS[variant]))
    ids, mask = left_padded_batch(37, 9, seed=8)
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        embeds = model.get_input_embeddings()(ids)
        before = embeds.clone()
        for attention_mask in (None, mask):
            with torch.no_grad():
                engine = model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).logits
                count = len(calls)
                monkeypatch.setattr(cpu_backbone, "MIN_TENSOR_BYTES", 1 << 60)
                blocks = model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).logits
                monkeypatch.setattr(cpu_backbone, "MIN_TENSOR_BYTES", 0)
            assert len(calls) == count  # the second run took the module path
            tol = 1e-6 if dtype == torch.float32 else 1e-12
            assert (engine - blocks).abs().max() <= tol * blocks.abs().max()
            with torch.no_grad():  # from input_ids the model's own embeddings are the first residual
                from_ids = model(ids, attention_mask=attention_mask, use_cache=False).logits
            assert (from_ids - blocks).abs().max() <= tol * blocks.abs().max()
        assert torch.equal(embeds, before)
    assert len(calls) == 8


def test_backbone_engine_only_where_it_serves(monkeypatch):
    """Per-layer outputs, a cache already filled (decoding), hooks, training mode, half precision, autograd and small
    tensors take the module path; a prefill filling an empty cache takes the engine."""
    cpu_backbone, calls = _count_backbone_engine_calls(monkeypatch)
    model = tiny_model()
    ids = torch.randint(1, 50, (1, 16))
    with torch.no_grad():
        model(ids, use_cache=False)  # below MIN_TENSOR_BYTES
        assert calls == []
        monkeypatch.setattr(cpu_backbone, "MIN_TENSOR_BYTES", 0)
        model(ids, use_cache=False)
        assert calls == [1]
        model(ids, use_cache=False, output_hidden_states=True)
        cache = model(ids, use_cache=True).past_key_values
        assert calls == [1, 1] and cache.get_seq_length() == 16
        model(ids[:, :3], past_key_values=cache, use_cache=True)
        for register in (
            model.backbone.layers[0].mlp.register_forward_pre_hook,
            model.backbone.norm_f.register_forward_hook,
        ):
            handle = register(lambda *args: None)
            model(ids, use_cache=False)
            handle.remove()
        model.backbone.layers[1].train()
        model(ids, use_cache=False)
        model.eval()
        model.to(torch.bfloat16)(ids, use_cache=False)
        model.float()
    model(ids, use_cache=False)  # autograd
    assert calls == [1, 1]
    with torch.no_grad():
        model(ids, use_cache=False)
    assert calls == [1, 1, 1]


def _state_tensors(layer) -> list:
    """Every tensor a cache layer holds: KV, conv and recurrent states, exact histories, step parameters."""
    found = []

    def collect(value):
        if torch.is_tensor(value):
            found.append(value.detach())
        elif isinstance(value, (tuple, list)):
            for item in value:
                collect(item)
        elif isinstance(value, dict):
            for key in sorted(value):
                collect(value[key])

    for name in ("keys", "values", "conv_states", "recurrent_states", "history", "step_params"):
        collect(getattr(layer, name, None))
    if hasattr(layer, "lengths"):
        found.append(torch.tensor(layer.lengths))
    return found


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_prefill_through_the_engines_leaves_the_module_paths_state(variant, small_blocks, monkeypatch):
    """A prefill through the CPU engines (backbone and channel-blocked mixer, no autograd) fills the decoding cache
    with what the module path (autograd on) leaves: every state tensor and step parameter, with and without left
    padding (left, and right where the short filter's window holds padding), in float64, all biases non-zero; the
    next tokens continue alike from both."""
    cpu_backbone, calls = _count_backbone_engine_calls(monkeypatch)
    monkeypatch.setattr(cpu_backbone, "MIN_TENSOR_BYTES", 0)
    model = random_biases(tiny_model(**VARIANTS[variant])).double()
    ids = torch.randint(1, 50, (2, 29), generator=torch.Generator().manual_seed(5))
    new_ids = torch.randint(1, 50, (2, 3), generator=torch.Generator().manual_seed(6))
    mask, right_padded = torch.ones_like(ids), torch.ones_like(ids)
    mask[1, :7] = 0
    right_padded[0, -2:] = 0  # the short filter's window then holds padding
    for attention_mask in (None, mask, right_padded):
        with torch.no_grad():
            engine = model(ids, attention_mask=attention_mask, use_cache=True)
        module = model(ids, attention_mask=attention_mask, use_cache=True)
        assert (engine.logits - module.logits.detach()).abs().max() <= 1e-12 * module.logits.abs().max()
        for engine_layer, module_layer in zip(engine.past_key_values.layers, module.past_key_values.layers):
            engine_state, module_state = _state_tensors(engine_layer), _state_tensors(module_layer)
            assert len(engine_state) == len(module_state) > 0
            for got, expected in zip(engine_state, module_state):
                assert got.shape == expected.shape
                assert (got - expected).abs().max() <= 1e-12 * max(expected.abs().max(), 1)
        full_mask = None if attention_mask is None else torch.cat([attention_mask, torch.ones_like(new_ids)], 1)
        with torch.no_grad():
            after_engine, after_module = (
                model(new_ids, attention_mask=full_mask, past_key_values=out.past_key_values).logits
                for out in (engine, module)
            )
        assert (after_engine - after_module).abs().max() <= 1e-12 * after_module.abs().max()
    assert calls == [1, 1, 1]


# Configuration corners the variants above do not reach: short filters of 1, 2 and 4 taps, no biases, no skip, no
# decay modulation, order 4, modal and H3 mixers without biases.
CONFIG_CORNERS = {
    "one_tap_short_filter": dict(short_filter_order=1),
    "two_taps_no_biases": dict(short_filter_order=2, bias=False),
    "order4_no_skip_no_modulation": dict(hyena_order=4, filter_use_bias=False, modulate=False, short_filter_order=4),
    "modal_no_biases": dict(VARIANTS["modal3"], bias=False, short_filter_order=4),
    "h3_no_biases": dict(VARIANTS["h3_attn"], bias=False),
}


@pytest.mark.parametrize("corner", sorted(CONFIG_CORNERS))
def test_config_corners_agree_across_call_patterns(corner, small_blocks, monkeypatch):
    """For each corner, in float32 and float64, with left padding: the CPU engines equal the module path, each padded
    row equals the row alone, and a prefill followed by one-token steps equals the full forward."""
    cpu_backbone, calls = _count_backbone_engine_calls(monkeypatch)
    model = random_biases(tiny_model(**CONFIG_CORNERS[corner]))
    ids = torch.randint(1, 50, (3, 41), generator=torch.Generator().manual_seed(3))  # FFT path from 33 tokens
    mask = torch.ones_like(ids)
    pads = (0, 5, 11)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
    for dtype, tol in ((torch.float32, 2e-6), (torch.float64, 1e-12)):
        model = model.to(dtype)
        with torch.no_grad():
            monkeypatch.setattr(cpu_backbone, "MIN_TENSOR_BYTES", 1 << 60)
            module = model(ids, attention_mask=mask, use_cache=False).logits
            monkeypatch.setattr(cpu_backbone, "MIN_TENSOR_BYTES", 0)
            before = len(calls)
            engine = model(ids, attention_mask=mask, use_cache=False).logits
            assert len(calls) == before + 1  # the engine served this forward, the module path the one above
            scale = module.abs().max()
            assert (engine - module).abs().max() <= tol * scale
            for row, pad in enumerate(pads):
                alone = model(ids[row : row + 1, pad:], use_cache=False).logits[0]
                assert (alone - module[row, pad:]).abs().max() <= tol * scale
            out = model(ids[:, :35], attention_mask=mask[:, :35], use_cache=True)
            steps, cache = [out.logits], out.past_key_values
            for t in range(35, ids.shape[1]):
                out = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], past_key_values=cache)
                steps.append(out.logits)
                cache = out.past_key_values
            stepwise = torch.cat(steps, 1)
        for row, pad in enumerate(pads):  # positions before a row's first real token are not compared
            assert (stepwise[row, pad:] - module[row, pad:]).abs().max() <= tol * scale


def test_fft_buffers_reused_within_the_context_only(small_blocks):
    """Inside ``fft_buffers_reused`` calls given no workspace share one per FFT size (H3's two convolutions per layer:
    a short filter and a full-length one) and still equal the naive convolution; the context nests and restores."""
    g = torch.Generator().manual_seed(12)
    outer, inner = {}, {}
    calls = [(2, 5, 100, 8), (2, 5, 100, 100), (2, 5, 100, 8), (1, 3, 100, 100)]
    with ops.fft_buffers_reused(outer):
        for B, C, L, taps in calls:
            v, h, D = torch.randn(B, C, L, generator=g), torch.randn(C, taps, generator=g), torch.randn(C, generator=g)
            post = torch.randn(B, 1, L, generator=g)  # broadcast over channels, as H3's padding mask is
            with torch.no_grad():
                got = ops.long_conv_torch(v, h, D, None, post)
            ref = naive(v, h, D, None, post.expand(B, C, L))
            assert (got.double() - ref).abs().max() <= 1e-5 * ref.abs().max(), (B, C, L, taps)
        with ops.fft_buffers_reused(inner), torch.no_grad():
            ops.long_conv_torch(v, h, D)
        assert sorted(outer) == [ops.conv_fft_size(100, 8), ops.conv_fft_size(100, 100)]
        assert list(inner) == [ops.conv_fft_size(100, 100)]
        assert ops._reuse.workspaces is outer
    assert ops._reuse.workspaces is None
