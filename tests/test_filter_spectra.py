"""Filter spectra kept between CPU inference forwards (hyena_hf.filter_spectra): forwards that read them equal the
forwards that compute the filters, bit for bit; any change to what the filters are computed from recomputes them;
memory stays within the budget and goes with the model."""

import gc
import weakref

import pytest
import torch
from test_inference_paths import random_biases, small_blocks  # noqa: F401 (a fixture)

import hyena_hf.filter_spectra as filter_spectra
import hyena_hf.ops as ops
from hyena_hf.modeling_hyena import HyenaImplicitFilter, ModalFilter

from conftest import VARIANTS, left_padded_batch, tiny_model
from test_long_conv import naive

HYENA_VARIANTS = sorted(name for name, overrides in VARIANTS.items() if overrides.get("filter_type") != "h3")


@pytest.fixture
def filter_calls(monkeypatch):
    """Counts the filters' evaluations (every Hyena forward that does not read kept spectra makes some)."""
    calls = []
    for cls in (HyenaImplicitFilter, ModalFilter):
        original = cls.filters_for
        monkeypatch.setattr(cls, "filters_for", lambda *args, _f=original, **kw: calls.append(1) or _f(*args, **kw))
    return calls


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


@pytest.mark.parametrize("variant", HYENA_VARIANTS)
def test_forwards_reading_kept_spectra_equal_computing_them(variant, small_blocks, filter_calls):  # noqa: F811
    """Float32 then float64 (the model converted), with and without left padding: the 1st forward at a length
    computes the filters, the 2nd computes and keeps their spectra, the later ones compute no filter and give the
    same logits bit for bit."""
    model = random_biases(tiny_model(**VARIANTS[variant]))
    ids, mask = left_padded_batch(45, 7, seed=1)
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        for attention_mask in (None, mask):
            expected = cold_logits(model, ids, attention_mask=attention_mask)
            for forward in range(4):
                calls_before = len(filter_calls)
                assert torch.equal(logits(model, ids, attention_mask=attention_mask), expected), (dtype, forward)
                computed = len(filter_calls) > calls_before
                assert computed == (forward < 2 and attention_mask is None), (dtype, forward)  # padding: same length


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
    spectra = filter_spectra._kept[filters[0]].spectra
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


@pytest.mark.parametrize("L", [33, 100, 257])
def test_long_conv_writes_then_reads_the_filter_spectra(L, small_blocks):  # noqa: F811
    """long_conv_torch with ``spectra``: given h, it writes them (result as without); given only them, the same
    result; both equal the naive convolution. Calls they cannot serve are refused."""
    g = torch.Generator().manual_seed(L)
    B, C = 2, 5
    v, h, D = torch.randn(B, C, L, generator=g), torch.randn(C, L, generator=g), torch.randn(C, generator=g)
    pre, post = torch.randn(B, C, L, generator=g), torch.randn(B, C, L, generator=g)
    shape, dtype = ops.filter_spectra_shape(C, L, v.dtype)
    spectra = torch.full(shape, float("nan"), dtype=dtype)
    with torch.no_grad():
        plain = ops.long_conv_torch(v, h, D, pre, post)
        written = ops.long_conv_torch(v, h, D, pre, post, spectra=spectra)
        read = ops.long_conv_torch(v, None, None, pre, post, spectra=spectra)
        half = ops.long_conv_torch(
            v.bfloat16(), None, None, pre, post, out=torch.empty(B, C, L).bfloat16(), spectra=spectra
        )
    ref = naive(v, h, D, pre, post)
    assert torch.equal(written, plain) and torch.equal(read, plain)
    assert (read.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (half.double() - ref).abs().max() <= 2e-2 * ref.abs().max()
    with pytest.raises(ValueError, match="spectra= serves inference"):
        ops.long_conv_torch(v.requires_grad_(), None, None, pre, post, spectra=spectra)
    with torch.no_grad(), pytest.raises(ValueError, match="spectra= needs"):
        ops.long_conv_torch(v, None, None, pre, post, spectra=spectra[:-1])
    with torch.no_grad(), pytest.raises(ValueError, match="spectra= serves inference"):
        ops.long_conv_torch(v[..., :32], None, None, spectra=spectra)
