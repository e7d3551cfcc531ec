"""Behaviour of the transformers model: causality, padding, batching, checkpointing, save/load, heads, errors."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from hyena_hf import HyenaConfig, HyenaForCausalLM, HyenaForSequenceClassification, HyenaModel

from conftest import TEST_DEVICE, VARIANTS, tiny_config, tiny_model


def _ids(bsz, seqlen, seed=0, vocab=50):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (bsz, seqlen), generator=g).to(TEST_DEVICE)


def test_causality(variant_model):
    ids = _ids(2, 40)
    changed = ids.clone()
    changed[:, 25:] = _ids(2, 15, seed=1)
    with torch.no_grad():
        a = variant_model(ids).logits
        b = variant_model(changed).logits
    assert (a[:, :25] - b[:, :25]).abs().max() < 1e-5
    assert (a[:, 25:] - b[:, 25:]).abs().max() > 1e-3


def test_batch_equals_single(variant_model):
    ids = _ids(3, 33)
    with torch.no_grad():
        batch = variant_model(ids).logits
        for i in range(3):
            single = variant_model(ids[i : i + 1]).logits
            assert (batch[i] - single[0]).abs().max() < 1e-5


def test_left_padding_equals_unpadded(variant_model):
    ids = _ids(2, 30)
    pad = 7
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long, device=ids.device), ids[1:, : 30 - pad]], dim=1)
    batch = torch.cat([ids[:1], padded])
    mask = torch.ones_like(batch)
    mask[1, :pad] = 0
    # poison the padded positions: they must not matter
    batch[1, :pad] = 13
    with torch.no_grad():
        logits = variant_model(batch, attention_mask=mask).logits
        alone0 = variant_model(ids[:1]).logits
        alone1 = variant_model(ids[1:, : 30 - pad]).logits
    assert torch.isfinite(logits).all()
    assert (logits[0] - alone0[0]).abs().max() < 1e-5
    assert (logits[1, pad:] - alone1[0]).abs().max() < 1e-5


def test_left_padded_batch_generation_equals_single(variant_model):
    ids = _ids(2, 12, seed=3)
    short = ids[1:, 4:]
    batch = torch.cat([ids[:1], torch.cat([torch.zeros(1, 4, dtype=torch.long, device=ids.device), short], 1)])
    mask = torch.ones_like(batch)
    mask[1, :4] = 0
    out = variant_model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    alone = variant_model.generate(short, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(out[1, 4:], alone[0])


def test_gradient_checkpointing_gives_same_gradients(device):
    model = tiny_model(**VARIANTS["hyena3_attn_rotary"]).to(device).train()
    ids = _ids(2, 24)

    def grads():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert all(block.gradient_checkpointing for block in model.backbone.layers)
    ckpt = grads()
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], atol=1e-6), name


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_save_load_round_trip_and_auto_classes(tmp_path, variant, device):
    model = tiny_model(**VARIANTS[variant]).to(device)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "hyena"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).to(device).eval()
    assert isinstance(loaded, HyenaForCausalLM)
    ids = _ids(2, 20)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded.lm_head.weight.data_ptr() == loaded.backbone.embeddings.weight.data_ptr()
    base = AutoModel.from_pretrained(tmp_path).to(device)
    assert isinstance(base, HyenaModel)
    with torch.no_grad():
        assert torch.equal(base(ids).last_hidden_state, model.backbone(ids).last_hidden_state)


def test_tied_weights_and_padded_vocab(device):
    model = tiny_model(vocab_size=45).to(device)
    assert model.backbone.embeddings.weight.shape[0] == 48
    assert model.lm_head.weight is model.backbone.embeddings.weight
    assert model(_ids(1, 5, vocab=45)).logits.shape[-1] == 45
    untied = HyenaForCausalLM(tiny_config(tie_word_embeddings=False))
    assert untied.lm_head.weight is not untied.backbone.embeddings.weight


def test_labels_loss_is_shifted_cross_entropy_ignoring_minus_100(device):
    model = tiny_model().to(device)
    ids = _ids(2, 16)
    labels = ids.clone()
    labels[0, :5] = -100
    out = model(ids, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 50)
    target = labels[:, 1:].reshape(-1)
    expected = torch.nn.functional.cross_entropy(logits.double(), target, ignore_index=-100)
    assert abs(out.loss.item() - expected.item()) < 1e-5


def test_logits_to_keep(device):
    model = tiny_model().to(device)
    ids = _ids(2, 16)
    with torch.no_grad():
        full = model(ids).logits
        assert torch.allclose(model(ids, logits_to_keep=1).logits, full[:, -1:], atol=1e-6)
        assert torch.allclose(model(ids, num_logits_to_keep=3).logits, full[:, -3:], atol=1e-6)


def test_float_dtypes_run_long_conv_in_float32(device):
    model = tiny_model().to(device)
    ids = _ids(1, 30)
    with torch.no_grad():
        ref = model(ids).logits
        bf16 = model.to(torch.bfloat16)(ids).logits.float()
    assert (bf16 - ref).abs().max() < 0.15 * ref.abs().max()


def test_too_long_input_raises_clear_error(device):
    model = tiny_model().to(device)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=64"):
        model(_ids(1, 65))
    # H3 has no filter length: longer inputs are fine
    h3 = tiny_model(**VARIANTS["h3_attn"]).to(device)
    assert h3(_ids(1, 80)).logits.shape == (1, 80, 50)


@pytest.mark.parametrize(
    "problem,expected",
    [
        (dict(hyena_order=1), "hyena_order"),
        (dict(order=1), "hyena_order"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(d_model=-4), "hidden_size"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(filter_type="fourier"), "filter_type"),
        (dict(attn_layer_idx=[5]), "attn_layer_idx"),
        (dict(filter_emb_dim=4), "filter_emb_dim"),
        (dict(max_position_embeddings=0), "max_position_embeddings"),
        (dict(long_conv_impl="cuda"), "long_conv_impl"),
        (dict(attn_layer_idx=[0], num_attention_heads=5), "num_attention_heads"),
        (dict(attn_layer_idx=[0], num_attention_heads=4, rotary_emb_dim=12), "rotary_emb_dim"),
        (dict(filter_type="h3", ssm_state_size=7), "ssm_state_size"),
        (dict(resid_dropout=1.5), "resid_pdrop"),
    ],
)
def test_bad_config_values_raise_value_error_naming_the_field(problem, expected):
    with pytest.raises(ValueError, match=expected):
        tiny_config(**problem)


def test_original_names_are_aliases():
    config = HyenaConfig(
        d_model=48, n_layer=3, d_inner=96, l_max=128, order=3, emb_dim=5, w=14, shift=0.05, d_state=16, vocab_size=10
    )
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (48, 3, 96)
    assert (config.max_position_embeddings, config.hyena_order, config.filter_emb_dim) == (128, 3, 5)
    assert (config.filter_sin_freq, config.modulation_shift, config.ssm_state_size) == (14, 0.05, 16)
    assert config.d_model == 48 and config.l_max == 128
    assert config.layer_types == ["linear_attention"] * 3
    hybrid = HyenaConfig(n_layer=3, attn_layer_idx=[2, 0])
    assert hybrid.layer_types == ["full_attention", "linear_attention", "full_attention"]


def test_config_round_trip(tmp_path):
    config = tiny_config(hyena_order=3, attn_layer_idx=[1], num_attention_heads=4, modulate=False)
    config.save_pretrained(tmp_path)
    loaded = HyenaConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()


def test_sequence_classification_pools_last_real_token(device):
    torch.manual_seed(0)
    config = tiny_config(num_labels=3)
    model = HyenaForSequenceClassification(config).to(device).eval()
    ids = _ids(2, 20)
    padded = torch.cat([torch.zeros(1, 6, dtype=torch.long, device=device), ids[1:, :14]], 1)
    batch = torch.cat([ids[:1], padded])
    mask = (batch != 0).long()
    with torch.no_grad():
        out = model(batch, attention_mask=mask)
        alone = model(ids[1:, :14])
        hidden = model.backbone(ids[:1]).last_hidden_state
    assert out.logits.shape == (2, 3)
    assert (out.logits[1] - alone.logits[0]).abs().max() < 1e-5
    assert torch.allclose(out.logits[0], model.score(hidden[0, -1]), atol=1e-5)
    # pad_token_id pooling when no mask is given (right padding)
    right = torch.cat([ids[1:, :14], torch.zeros(1, 6, dtype=torch.long, device=device)], 1)
    with torch.no_grad():
        assert torch.allclose(model(right).logits[0], model(ids[1:, :14]).logits[0], atol=1e-5)
    labels = torch.tensor([0, 2], device=device)
    loss = model(batch, attention_mask=mask, labels=labels).loss
    expected = torch.nn.functional.cross_entropy(out.logits, labels)
    assert abs(loss.item() - expected.item()) < 1e-5
    assert AutoModelForSequenceClassification.from_config(config).__class__ is HyenaForSequenceClassification


def test_sequence_classification_regression_and_multilabel(device):
    torch.manual_seed(0)
    ids = _ids(2, 10)
    reg = HyenaForSequenceClassification(tiny_config(num_labels=1)).to(device).eval()
    values = torch.tensor([0.5, -1.0], device=device)
    out = reg(ids, labels=values)
    assert abs(out.loss.item() - torch.nn.functional.mse_loss(out.logits.squeeze(-1), values).item()) < 1e-6
    multi = HyenaForSequenceClassification(tiny_config(num_labels=3, problem_type="multi_label_classification"))
    multi = multi.to(device).eval()
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], device=device)
    out = multi(ids, labels=target)
    assert abs(out.loss.item() - torch.nn.functional.binary_cross_entropy_with_logits(out.logits, target).item()) < 1e-6


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_torch_compile_fullgraph_matches_eager(variant, device):
    """torch.compile(fullgraph=True) fails on any graph break (a CPU fast path asking oneDNN did break the graph in
    eval); the compiled forward, padded, and the compiled training step's gradients match eager."""
    model = tiny_model(**VARIANTS[variant]).to(device)
    ids = _ids(2, 24)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        eager = model(ids, attention_mask=mask).logits
        assert torch.allclose(compiled(ids, attention_mask=mask).logits, eager, atol=1e-5)
    model.train()
    grads = []
    for run in (model, compiled):
        model.zero_grad()
        run(ids, attention_mask=mask, labels=ids, use_cache=False).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_init_matches_original_scheme(device):
    model = tiny_model().to(device)
    cfg = model.config
    layer = model.backbone.layers[0]
    assert abs(layer.mixer.in_proj.weight.std().item() - cfg.initializer_range) < 0.005
    expected_out_std = cfg.initializer_range / (2 * cfg.num_hidden_layers) ** 0.5
    assert abs(layer.mlp.fc2.weight.std().item() - expected_out_std) < 0.003
    filt = layer.mixer.filter
    assert torch.all(filt.sin_freq == cfg.filter_sin_freq)
    assert torch.isfinite(torch.stack([p.sum() for p in model.parameters()])).all()
