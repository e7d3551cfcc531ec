"""Original-checkpoint loading: safe unpickling, and one-line errors naming the cause."""

import os

import pytest
import torch

from hyena_hf.conversion import (
    ConversionError,
    convert_state_dict,
    detect_format,
    extract_state_dict,
    load_checkpoint,
    read_original_config,
)

from conftest import fixture_dir


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _safari():
    folder = fixture_dir("safari_hyena_lm")
    return extract_state_dict(load_checkpoint(folder / "model.ckpt")), read_original_config(folder / "meta.json")


def test_lightning_checkpoint_with_omegaconf_objects_loads_without_omegaconf():
    with pytest.raises(ModuleNotFoundError):
        import omegaconf  # noqa: F401  (the point: it is not installed, and nothing tries to import it)
    ckpt = load_checkpoint(fixture_dir("hyenadna_lm_lightning_full") / "weights.ckpt")
    assert "optimizer_states" in ckpt
    state_dict = extract_state_dict(ckpt)
    assert detect_format(state_dict) == "hyenadna"
    assert all(k.startswith("model.") for k in state_dict)


def test_malicious_reduce_payload_is_neutralised(tmp_path):
    marker = tmp_path / "pwned"
    state_dict, _ = _safari()
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state_dict, "hyper_parameters": _Payload(marker)}, path)
    ckpt = load_checkpoint(path)
    assert not marker.exists(), "code from the checkpoint was executed"
    assert "backbone.ln_f.weight" in extract_state_dict(ckpt)
    assert "skipped" in repr(ckpt["hyper_parameters"]).lower()


def test_truncated_file_is_a_clear_error(tmp_path):
    data = (fixture_dir("safari_hyena_lm") / "model.ckpt").read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated or corrupt"):
        load_checkpoint(path)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(ConversionError, match="empty"):
        load_checkpoint(tmp_path / "empty.ckpt")
    with pytest.raises(ConversionError, match="not found"):
        load_checkpoint(tmp_path / "absent.ckpt")


def test_missing_key_is_named():
    state_dict, kwargs = _safari()
    del state_dict["backbone.layers.1.mixer.out_proj.bias"]
    with pytest.raises(ConversionError, match=r"missing keys: backbone\.layers\.1\.mixer\.out_proj\.bias"):
        convert_state_dict(state_dict, kwargs)


def test_unexpected_key_is_named():
    state_dict, kwargs = _safari()
    state_dict["backbone.layers.0.mixer.mystery.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match="unexpected keys.*mystery"):
        convert_state_dict(state_dict, kwargs)


def test_shape_mismatch_names_key_expected_and_found():
    state_dict, kwargs = _safari()
    state_dict["backbone.layers.1.mlp.fc2.bias"] = torch.zeros(65)
    with pytest.raises(
        ConversionError,
        match=r"shape mismatch for backbone\.layers\.1\.mlp\.fc2\.bias: expected \(64,\), found \(65,\)",
    ):
        convert_state_dict(state_dict, kwargs)


def test_config_contradicting_tensors():
    state_dict, kwargs = _safari()
    with pytest.raises(ConversionError, match="d_model=32 but the tensors say 64"):
        convert_state_dict(state_dict, {**kwargs, "d_model": 32})
    layer = {k: v for k, v in kwargs["layer"].items() if k != "modulate"}
    with pytest.raises(ConversionError, match="layer.modulate is required"):
        convert_state_dict(state_dict, {**kwargs, "layer": layer})
    with pytest.raises(ConversionError, match="unknown checkpoint format"):
        convert_state_dict({"foo.weight": torch.zeros(2)}, kwargs)
    with pytest.raises(ConversionError, match="vocab_size=100 with pad_vocab_size_multiple=16"):
        convert_state_dict(state_dict, {**kwargs, "pad_vocab_size_multiple": 16})


def test_untied_lm_head_is_refused():
    state_dict, kwargs = _safari()
    state_dict["lm_head.weight"] = state_dict["lm_head.weight"].clone() + 1
    with pytest.raises(ConversionError, match="lm_head.weight differs"):
        convert_state_dict(state_dict, kwargs)
