"""Distillation of implicit filters into modal (pole/residue) filters."""

import torch
from transformers import AutoModelForCausalLM

from hyena_hf.distillation import distill, fit_modal, relative_error
from hyena_hf.modeling_hyena import modal_impulse_response

from conftest import load_fixture_model, tiny_model


def test_recovers_a_filter_that_is_a_sum_of_modes():
    g = torch.Generator().manual_seed(0)
    C, N, L = 3, 4, 128
    magnitude = 0.6 + 0.35 * torch.rand(C, N, generator=g, dtype=torch.float64)
    angle = 0.2 + 2.5 * torch.rand(C, N, generator=g, dtype=torch.float64)
    poles = torch.polar(magnitude, angle)
    residues = torch.complex(
        torch.randn(C, N, generator=g, dtype=torch.float64), torch.randn(C, N, generator=g, dtype=torch.float64)
    )
    h = modal_impulse_response(poles, residues, L)
    fitted_poles, fitted_residues, singular = fit_modal(h, N)
    assert relative_error(h, fitted_poles, fitted_residues) < 1e-8
    # the Hankel matrix of a 2N-real-mode filter has rank 2N
    assert (singular[:, 2 * N] / singular[:, 0]).max() < 1e-10


def test_error_decreases_with_state_size_on_a_real_implicit_filter():
    model = load_fixture_model("safari_hyena_lm")
    with torch.no_grad():
        h = model.backbone.layers[0].mixer.filter(128)[:16].double()
    errors = []
    for n in (1, 2, 4, 8, 16):
        poles, residues, _ = fit_modal(h, n)
        errors.append(relative_error(h, poles, residues))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.3 * errors[0]


def test_refinement_does_not_increase_the_error():
    model = load_fixture_model("hyenadna_lm")
    with torch.no_grad():
        h = model.backbone.layers[1].mixer.filter(130)[:8].double()
    base = relative_error(h, *fit_modal(h, 4)[:2])
    refined = relative_error(h, *fit_modal(h, 4, refine_steps=50)[:2])
    assert refined <= base * 1.0001


def test_distilled_model_decodes_saves_and_loads(tmp_path):
    model = tiny_model(hyena_order=3, attn_layer_idx=[1], num_attention_heads=4, num_hidden_layers=3)
    modal, report = distill(model, state_size=8, progress=False, force=True)  # a random model: quality aside
    assert modal.config.filter_type == "modal" and modal.config.modal_state_size == 8
    assert set(report.relative_l2_error) == {0, 2} and all(e >= 0 for e in report.relative_l2_error.values())
    assert modal.backbone.layers[0].mixer.filter.poles.dtype == torch.float32
    ids = torch.randint(1, 50, (2, 20), generator=torch.Generator().manual_seed(1))
    # the distilled filters are what the modal model convolves with
    with torch.no_grad():
        h_modal = modal.backbone.layers[0].mixer.filter(64)
        h_orig = model.backbone.layers[0].mixer.filter(64)
    err = ((h_modal - h_orig).norm() / h_orig.norm()).item()
    assert abs(err - report.relative_l2_error[0]) < 1e-4
    modal.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(modal(ids).logits, loaded(ids).logits)
    # no length limit any more: longer than the original max_position_embeddings (64)
    long_ids = torch.randint(1, 50, (1, 80))
    out = loaded.generate(long_ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(
        out, loaded.generate(long_ids, max_new_tokens=5, do_sample=False, use_cache=False, pad_token_id=0)
    )
