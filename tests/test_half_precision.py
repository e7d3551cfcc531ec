"""Half precision: every route to a bfloat16 / float16 model gives float32-quality logits on every golden fixture.

Reference: the same model in float32. Bounds (relative L2 error of the logits, argmax agreement): bfloat16 3e-2 / 95 %,
float16 5e-3 / 98 % (hyena_hf.precision.PARITY_BOUNDS).
"""

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from hyena_hf import HyenaForCausalLM
from hyena_hf.cli import main
from hyena_hf.precision import FLOAT32_PARAMETER_PATTERNS, PARITY_BOUNDS, logits_agreement

from conftest import (
    CHECKPOINT_FILES,
    FIXTURE_NAMES,
    VARIANTS,
    fixture_dir,
    fixture_tensors,
    load_fixture_model,
    tiny_config,
    tiny_model,
)

HALF = {"bfloat16": torch.bfloat16, "float16": torch.float16}
FILTER_TENSOR = re.compile("|".join(FLOAT32_PARAMETER_PATTERNS))


def _input_batches(name, device):
    return [v.to(device) for k, v in sorted(fixture_tensors(name).items()) if k.startswith("input_ids")]


def _logits(model, batches) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.eval()(x).logits.float().flatten(0, 1) for x in batches])


def _assert_within_bounds(logits, reference, dtype, what):
    max_relative, min_argmax = PARITY_BOUNDS[dtype]
    relative, agreement = logits_agreement(logits, reference)
    assert relative <= max_relative and agreement >= min_argmax, (what, relative, agreement)


def _assert_float32_filters(model, dtype):
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        expected = torch.float32 if FILTER_TENSOR.search(name) else dtype
        assert tensor.dtype == expected, (name, tensor.dtype)


def _half_routes(name, dtype, folder, device):
    yield ".to(dtype)", load_fixture_model(name).to(device=device, dtype=dtype)
    method = {torch.bfloat16: "bfloat16", torch.float16: "half"}[dtype]
    yield f".{method}()", getattr(load_fixture_model(name), method)().to(device)
    yield "from_pretrained(dtype=)", AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device)
    half_folder = folder.parent / f"{folder.name}-half"
    load_fixture_model(name).to(dtype).save_pretrained(half_folder)
    with safe_open(str(half_folder / "model.safetensors"), framework="pt") as saved:  # filters stored in float32
        assert {saved.get_slice(k).get_dtype() for k in saved.keys() if FILTER_TENSOR.search(k)} == {"F32"}
    yield "saved in half, dtype='auto'", AutoModelForCausalLM.from_pretrained(half_folder, dtype="auto").to(device)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:  # built under a half default dtype, then the float32 weights loaded into it
        built = HyenaForCausalLM(load_fixture_model(name).config)
    finally:
        torch.set_default_dtype(previous)
    built.load_state_dict(load_fixture_model(name).state_dict())
    yield "built under a half default dtype", built.to(device)


@pytest.mark.parametrize("dtype_name", sorted(HALF))
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_route_to_half_precision_is_within_bounds(tmp_path, device, name, dtype_name):
    dtype = HALF[dtype_name]
    folder = tmp_path / name
    load_fixture_model(name).save_pretrained(folder)
    batches = _input_batches(name, device)
    reference = _logits(load_fixture_model(name).to(device), batches)
    for route, model in _half_routes(name, dtype, folder, device):
        _assert_float32_filters(model, dtype)
        _assert_within_bounds(_logits(model, batches), reference, dtype, route)


# every variant, and the implicit-filter ones (exact decoding) once more with relaxed steps
_DECODING_CASES = [(v, "sum") for v in sorted(VARIANTS)] + [
    (v, "relaxed") for v in sorted(VARIANTS) if VARIANTS[v].get("filter_type", "implicit") == "implicit"
]


@pytest.mark.parametrize("dtype_name", sorted(HALF))
@pytest.mark.parametrize("variant,exact_steps", _DECODING_CASES)
def test_cached_decoding_in_half_precision(device, variant, exact_steps, dtype_name, request):
    """Prefill + one-token steps (exact cache by the sum over the history or relaxed, modal and H3 recurrences,
    attention KV) in half precision against the float32 full forward."""
    if exact_steps == "relaxed":
        request.getfixturevalue("relaxed_everywhere")
    dtype = HALF[dtype_name]
    model32 = tiny_model(**VARIANTS[variant]).to(device)
    model = tiny_model(**VARIANTS[variant]).to(device=device, dtype=dtype)
    ids = torch.randint(1, 50, (2, 24), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        reference = model32(ids).logits
        out = model(ids[:, :9], use_cache=True)
        logits = [out.logits]
        for t in range(9, 24):
            out = model(ids[:, t : t + 1], past_key_values=out.past_key_values)
            logits.append(out.logits)
    assert torch.cat(logits, 1).dtype == dtype
    _assert_within_bounds(torch.cat(logits, 1).float().flatten(0, 1), reference.flatten(0, 1), dtype, variant)
    generated = model.generate(ids[:, :5], max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert generated.shape == (2, 11)


def test_float16_builds_loads_runs_and_generates(tmp_path, device):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        model = HyenaForCausalLM(tiny_config()).to(device)
    finally:
        torch.set_default_dtype(previous)
    _assert_float32_filters(model, torch.float16)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float16).to(device)
    ids = torch.randint(1, 50, (1, 10)).to(device)
    assert torch.isfinite(loaded(ids).logits).all()
    assert loaded.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0).shape == (1, 14)


def test_checkpoint_with_half_filter_tensors_says_what_it_lost(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    state = {
        k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
        if k != "lm_head.weight"
    }
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="long-filter tensors in half precision .*rounding cannot be undone"):
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    _assert_float32_filters(loaded, torch.bfloat16)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_float32_patterns_name_this_models_weights_under_both_readings(tmp_path, variant):
    """transformers' loader searches ``_keep_in_fp32_modules_strict`` entries as regular expressions, its model tests
    read them as whole dotted components; both readings must pick the same weights, every entry must name some
    weight of this model (an entry naming none hides a typo), and a float16 load keeps exactly those in float32."""
    model = tiny_model(**VARIANTS[variant])
    patterns = model._keep_in_fp32_modules_strict
    assert patterns and model.backbone._keep_in_fp32_modules_strict == patterns
    names = [k for k, v in model.state_dict().items() if v.is_floating_point()]
    for pattern in patterns:
        searched = {k for k in names if re.search(pattern, k)}
        components = {k for k in names if re.search(rf"(?:^|\.){pattern}(?:\.|$)", k)}
        assert searched and searched == components, pattern
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float16)
    for name, tensor in loaded.state_dict().items():
        if tensor.is_floating_point():
            kept = any(re.search(rf"(?:^|\.){p}(?:\.|$)", name) for p in patterns)
            assert tensor.dtype == (torch.float32 if kept else torch.float16), name
            assert kept == bool(FILTER_TENSOR.search(name)), name


def test_from_pretrained_of_a_state_dict_without_a_folder():
    """``from_pretrained(None, config=..., state_dict=...)`` (transformers' in-memory load) gives the same weights,
    and says so when the state dict's long-filter tensors were rounded to half precision."""
    model = tiny_model()
    state = model.state_dict()
    loaded = HyenaForCausalLM.from_pretrained(None, config=model.config, state_dict=state)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    rounded = {k: (v.to(torch.bfloat16) if FILTER_TENSOR.search(k) else v) for k, v in state.items()}
    with pytest.warns(UserWarning, match="state_dict stores .* long-filter tensors in half precision"):
        HyenaForCausalLM.from_pretrained(None, config=model.config, state_dict=rounded)


def test_trainer_bf16_step_matches_float32(tmp_path):
    """Trainer(bf16=True) on CPU (autocast): loss within 3e-2 of the float32 step, finite gradients everywhere."""
    name = "hyenadna_lm"
    ids = fixture_tensors(name)["input_ids"]
    dataset = [{"input_ids": row, "labels": row} for row in ids]
    losses = {}
    for bf16 in (False, True):
        model = load_fixture_model(name).train()
        args = TrainingArguments(
            str(tmp_path / str(bf16)),
            bf16=bf16,
            use_cpu=True,
            max_steps=1,
            learning_rate=0.0,
            per_device_train_batch_size=len(dataset),
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset)
        losses[bf16] = trainer.train().training_loss
        batch = {"input_ids": ids, "labels": ids}
        model.zero_grad()
        with trainer.autocast_smart_context_manager():
            loss = model(**batch).loss
        loss.backward()
        for param_name, param in model.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    assert abs(losses[True] - losses[False]) <= 3e-2 * abs(losses[False]), losses


@pytest.mark.parametrize("dtype_name", sorted(HALF))
def test_convert_half_precision_reports_parity_within_bounds(tmp_path, capsys, dtype_name):
    folder = fixture_dir("hyenadna_lm")
    out = tmp_path / "converted"
    argv = [
        "convert",
        str(folder / CHECKPOINT_FILES["hyenadna_lm"]),
        str(out),
        "--dtype",
        dtype_name,
        "--reference",
        str(folder / "fixture.safetensors"),
    ]
    assert main(argv) == 0
    assert f"within the {dtype_name} bounds" in capsys.readouterr().out
    info = json.loads((out / "conversion.json").read_text())
    bound, min_argmax = PARITY_BOUNDS[HALF[dtype_name]]
    assert all(
        f["relative_l2"] <= bound and f["argmax_agreement"] >= min_argmax for f in info["parity_agreement"].values()
    )
    with safe_open(str(out / "model.safetensors"), framework="pt") as saved:
        dtypes = {k: saved.get_slice(k).get_dtype() for k in saved.keys()}
    assert {d for k, d in dtypes.items() if FILTER_TENSOR.search(k)} == {"F32"}
    assert {d for k, d in dtypes.items() if not FILTER_TENSOR.search(k)} == {
        "BF16" if dtype_name == "bfloat16" else "F16"
    }


def test_convert_outside_the_parity_bound_fails_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(PARITY_BOUNDS, torch.bfloat16, (1e-9, 1.0))  # a conversion this far off must not pass
    folder = fixture_dir("hyenadna_lm")
    argv = [
        "convert",
        str(folder / CHECKPOINT_FILES["hyenadna_lm"]),
        str(tmp_path / "out"),
        "--dtype",
        "bfloat16",
        "--reference",
        str(folder / "fixture.safetensors"),
    ]
    assert main(argv) == 1
    assert "parity check failed for logits" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
