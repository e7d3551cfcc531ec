"""Filter spectra kept between CPU inference forwards (hyena_hf.filter_spectra): forwards that read them equal the
forwards that compute the filters, bit for bit; any change to what the filters are computed from recomputes them;
memory stays within the budget and goes with the model."""

import gc
import weakref

import pytest
import torch
from test_inference_paths import random_biases

import hyena_hf.cpu_backbone as cpu_backbone
import hyena_hf.filter_spectra as filter_spectra
import hyena_hf.ops as ops
from hyena_hf.modeling_hyena import H3Mixer, HyenaImplicitFilter, ModalFilter

from conftest import VARIANTS, left_padded_batch, tiny_model
from test_long_conv import naive

HYENA_VARIANTS = sorted(name for name, overrides in VARIANTS.items() if overrides.get("filter_type") != "h3")
H3_SSM_PARAMETERS = (
    "shift_B",
    "shift_C",
    "shift_D",
    "ssm_log_dt",
    "ssm_inv_A_real",
    "ssm_A_imag",
    "ssm_B",
    "ssm_C",
    "D",
)


@pytest.fixture
def filter_calls(monkeypatch):
    """Counts the filters' and H3 kernels' evaluations (every forward that does not read kept spectra makes some)."""
    calls = []
    for cls, name in [(HyenaImplicitFilter, "filters_for"), (ModalFilter, "filters_for"), (H3Mixer, "ssm_kernel")]:
        original = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda *args, _f=original, **kw: calls.append(1) or _f(*args, **kw))
    return calls


@pytest.fixture
def backbone_engine(monkeypatch):
    """The whole-backbone CPU engine (where H3 mixers read kept spectra) at the tests' tiny sizes."""
    monkeypatch.setattr(cpu_backbone, "MIN_TENSOR_BYTES", 0)


def cold_logits(model, ids, **kwargs) -> torch.Tensor:
    """The forward with no spectra kept or read (every filter computed)."""
    budget, filter_spectra.MAX_BYTES = filter_spectra.MAX_BYTES, 0
    try:
        with torch.no_grad():
            return model(ids, use_cache=False, **kwargs).logits
    finally:
        filter_spectra.MAX_BYTES = budget


def logits(model, ids, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, use_cache=False, **kwargs).logits


def assert_kept_from_the_third_forward(model, ids, mask, filter_calls: list):
    """Float32 then float64 (the model converted; returned), without then with ``mask`` (same length): four forwards
    each give the logits of the forward computing every filter, bit for bit, and only the first two of the unpadded
    float32 and float64 ones compute filters. Returns the float64 model."""
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        for attention_mask in (None, mask):
            expected = cold_logits(model, ids, attention_mask=attention_mask)
            for forward in range(4):
                calls_before = len(filter_calls)
                assert torch.equal(logits(model, ids, attention_mask=attention_mask), expected), (dtype, forward)
                computed = len(filter_calls) > calls_before
                assert computed == (forward < 2 and attention_mask is None), (dtype, forward)
    return model


@pytest.mark.parametrize("variant", HYENA_VARIANTS)
def test_forwards_reading_kept_spectra_equal_computing_them(variant, small_blocks, filter_calls):
    """Float32 then float64 (the model converted), with and without left padding: the 1st forward at a length
    computes the filters, the 2nd computes and keeps their spectra, the later ones compute no filter and give the
    same logits bit for bit."""
    model = random_biases(tiny_model(**VARIANTS[variant]))
    ids, mask = left_padded_batch(45, 7, seed=1)
    assert_kept_from_the_third_forward(model, ids, mask, filter_calls)


@pytest.mark.parametrize("filter_type", ["implicit", "modal"])
def test_every_change_to_a_filter_input_recomputes_the_spectra(filter_type, filter_calls):
    """Each parameter and buffer of a filter (positional ones at positions inside the input) edited in place through
    ``.data`` (which no version counter sees) while its spectra are kept: the next forward equals the one computing
    every filter, and differs from before the edit."""
    overrides = dict(filter_type="modal", modal_state_size=4) if filter_type == "modal" else dict(modulate=True)
    model = tiny_model(**overrides)
    ids = torch.randint(1, 50, (1, 40), generator=torch.Generator().manual_seed(2))
    filter_module = model.backbone.layers[0].mixer.filter
    names = [name for name, _ in [*filter_module.named_parameters(), *filter_module.named_buffers()]]
    assert len(names) >= (3 if filter_type == "modal" else 8)
    for name in names:
        for _ in range(3):  # spectra kept and read
            before = logits(model, ids)
        calls_before = len(filter_calls)
        logits(model, ids)
        assert len(filter_calls) == calls_before, name
        tensor = filter_module.get_parameter(name) if name in dict(filter_module.named_parameters()) else None
        tensor = filter_module.get_buffer(name) if tensor is None else tensor
        edited = tensor.data[:, :10] if name in filter_spectra.POSITIONAL else tensor.data
        edited.mul_(1.25).add_(0.01)
        after = logits(model, ids)
        assert torch.equal(after, cold_logits(model, ids)), name
        assert not torch.equal(after, before), name


def test_a_config_change_the_filters_read_recomputes_the_spectra():
    model = tiny_model(modulate=True)
    ids = torch.randint(1, 50, (1, 40), generator=torch.Generator().manual_seed(3))
    for _ in range(3):
        kept = logits(model, ids)
    model.config.modulate = False
    assert torch.equal(logits(model, ids), cold_logits(model, ids))
    assert not torch.equal(logits(model, ids), kept)


def test_lengths_that_change_from_call_to_call_keep_nothing(filter_calls):
    model = tiny_model()
    for length in (40, 41, 40, 41, 40):
        ids = torch.randint(1, 50, (1, length), generator=torch.Generator().manual_seed(length))
        calls_before = len(filter_calls)
        assert torch.equal(logits(model, ids), cold_logits(model, ids))
        assert len(filter_calls) > calls_before
    assert all(filter_spectra._kept[block.mixer.filter].spectra is None for block in model.backbone.layers)


def test_kept_spectra_stay_within_the_budget_and_go_with_the_model(monkeypatch):
    model = tiny_model(num_hidden_layers=3)
    ids = torch.randint(1, 50, (1, 64), generator=torch.Generator().manual_seed(4))
    filters = [block.mixer.filter for block in model.backbone.layers]
    for _ in range(3):
        logits(model, ids)
    spectra = filter_spectra._kept[filters[0]].spectra[0]  # order 2: one convolution per layer
    assert all(filter_spectra._kept[f].spectra is not None for f in filters)

    model2 = tiny_model(num_hidden_layers=3)
    logits(model2, ids)  # its first forward copies what the filters are computed from
    room = spectra.numel() * spectra.element_size() * 3 // 2  # for the spectra of its first layer only
    monkeypatch.setattr(filter_spectra, "MAX_BYTES", filter_spectra.kept_bytes() + room)
    for _ in range(2):
        got = logits(model2, ids)
    assert torch.equal(got, cold_logits(model2, ids))
    kept = [filter_spectra._kept[block.mixer.filter].spectra is not None for block in model2.backbone.layers]
    assert kept == [True, False, False]
    assert filter_spectra.kept_bytes() <= filter_spectra.MAX_BYTES

    filter_spectra.release(model2)
    assert filter_spectra.kept_bytes(model2) == 0 and filter_spectra.kept_bytes(model) > 0
    held = sum(filter_spectra._kept[f].nbytes() for f in filters)
    before, first = filter_spectra.kept_bytes(), weakref.ref(filters[0])
    del model, filters
    gc.collect()
    assert first() is None  # the kept spectra do not keep the model alive
    assert filter_spectra.kept_bytes() <= before - held


@pytest.mark.parametrize("L,taps", [(33, 33), (100, 100), (257, 257), (100, 7), (45, 6)])
def test_long_conv_writes_then_reads_the_filter_spectra(L, taps, small_blocks):
    """long_conv_torch with ``spectra``: given h, it writes them (result as without); given only them and the
    filter's length, the same result; both equal the naive convolution. Calls they cannot serve are refused."""
    g = torch.Generator().manual_seed(L + taps)
    B, C = 2, 5
    v, h, D = torch.randn(B, C, L, generator=g), torch.randn(C, taps, generator=g), torch.randn(C, generator=g)
    pre, post = torch.randn(B, C, L, generator=g), torch.randn(B, C, L, generator=g)
    shape, dtype = ops.filter_spectra_shape(C, L, v.dtype, taps)
    spectra = torch.full(shape, float("nan"), dtype=dtype)
    with torch.no_grad():
        plain = ops.long_conv_torch(v, h, D, pre, post)
        written = ops.long_conv_torch(v, h, D, pre, post, spectra=spectra)
        read = ops.long_conv_torch(v, None, None, pre, post, spectra=spectra, taps=taps)
        out = torch.empty(B, C, L).bfloat16()
        half = ops.long_conv_torch(v.bfloat16(), None, None, pre, post, out=out, spectra=spectra, taps=taps)
    ref = naive(v, h, D, pre, post)
    assert torch.equal(written, plain) and torch.equal(read, plain)
    assert (read.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (half.double() - ref).abs().max() <= 2e-2 * ref.abs().max()
    with pytest.raises(ValueError, match="spectra= serves inference"):
        ops.long_conv_torch(v.requires_grad_(), None, None, pre, post, spectra=spectra, taps=taps)
    with torch.no_grad(), pytest.raises(ValueError, match="spectra= needs"):
        ops.long_conv_torch(v, None, None, pre, post, spectra=spectra[:-1], taps=taps)
    with torch.no_grad(), pytest.raises(ValueError, match="spectra= serves inference"):
        ops.long_conv_torch(v[..., :32], None, None, spectra=spectra, taps=taps)


def test_h3_forwards_reading_kept_kernel_spectra_equal_the_module_path(backbone_engine, filter_calls):
    """H3 mixers in the backbone engine: float32 then float64, with and without left padding, the 3rd forward at a
    length on computes no SSM kernel and gives the module path's logits bit for bit; a prefill's state gives the
    same greedy continuation."""
    model = random_biases(tiny_model(**VARIANTS["h3_attn"], num_hidden_layers=3))
    ids, mask = left_padded_batch(45, 7, seed=5)
    model = assert_kept_from_the_third_forward(model, ids, mask, filter_calls)
    generated = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    filter_spectra.release(model)
    budget, filter_spectra.MAX_BYTES = filter_spectra.MAX_BYTES, 0
    try:
        assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False), generated)
    finally:
        filter_spectra.MAX_BYTES = budget


@pytest.mark.parametrize("name", H3_SSM_PARAMETERS)
def test_every_change_to_an_h3_ssm_parameter_recomputes_the_spectra(name, backbone_engine):
    model = tiny_model(**VARIANTS["h3_attn"], num_hidden_layers=3)
    mixer = model.backbone.layers[1].mixer
    assert {n for n, _ in mixer.named_parameters(recurse=False)} == set(H3_SSM_PARAMETERS)
    ids = torch.randint(1, 50, (1, 40), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():  # SSM parameters start at zero in places: make every one matter
        for parameter in mixer.parameters(recurse=False):
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(7)))
    for _ in range(3):
        before = logits(model, ids)
    mixer.get_parameter(name).data.mul_(1.25).add_(0.01)
    after = logits(model, ids)
    assert torch.equal(after, cold_logits(model, ids))
    assert not torch.equal(after, before)
