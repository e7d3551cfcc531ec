"""Hostile and careless input: nothing lost, nothing run, nothing silently wrong, every error one line naming the cause.

One section per group of the issue: data loss, interrupted overwrite, a checkpoint changing the process, memory from
small files, raw errors, config values, silently wrong loading, model inputs.
"""

import collections
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from hyena_hf import HyenaConfig, HyenaDNATokenizer, HyenaForSequenceClassification, output_folder
from hyena_hf.cli import main
from hyena_hf.conversion import ConversionError, checkpoint_io, convert_state_dict, extract_state_dict, load_checkpoint
from hyena_hf.conversion.export import convert_to_folder

from conftest import fixture_dir, tiny_config, tiny_model

DNA = fixture_dir("hyenadna_lm")


def _tree(folder: Path) -> dict:
    """Every file below ``folder`` with its content hash (folders as entries too): a snapshot to compare."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def _user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(DNA / "weights.ckpt", folder / "weights.ckpt")
    shutil.copy(DNA / "config.json", folder / "config.json")
    (folder / "notes.txt").write_text("my notes")
    (folder / "sub" / "data.txt").write_text("keep me")
    return folder


def _one_line_error(capsys) -> str:
    """The CLI's error: one line (progress bars aside), no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hyena-hf ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------------------------------------------------
# 1. Data loss
# ----------------------------------------------------------------------------------------------------------------------
DATA_LOSS_CASES = {
    "cwd holding the source": (lambda f: ["weights.ckpt", ".", "--overwrite"], "contains the input"),
    "source folder itself": (lambda f: [str(f / "weights.ckpt"), str(f), "--overwrite"], "contains the input"),
    "ancestor of the source": (lambda f: [str(f / "weights.ckpt"), str(f.parent), "--overwrite"], "contains the input"),
    "folder of user files": (lambda f: [str(f / "weights.ckpt"), str(f / "sub"), "--overwrite"], "not written by"),
    "user files, no --overwrite": (lambda f: [str(f / "weights.ckpt"), str(f / "sub")], "not empty"),
    "a file as output": (lambda f: [str(f / "weights.ckpt"), str(f / "notes.txt"), "--overwrite"], "is a file"),
}


@pytest.mark.parametrize("case", sorted(DATA_LOSS_CASES))
def test_convert_never_touches_user_files(tmp_path, monkeypatch, capsys, case):
    folder = _user_folder(tmp_path)
    monkeypatch.chdir(folder)
    argv, expected = DATA_LOSS_CASES[case]
    before = _tree(tmp_path)
    assert main(["convert", *argv(folder)]) == 1
    assert expected in _one_line_error(capsys)
    assert _tree(tmp_path) == before


def test_overwrite_replaces_only_a_previous_output(tmp_path, capsys):
    folder = _user_folder(tmp_path)
    out = tmp_path / "converted"
    assert main(["convert", str(folder / "weights.ckpt"), str(out)]) == 0
    assert main(["convert", str(folder / "weights.ckpt"), str(out), "--overwrite"]) == 0  # a previous output
    assert AutoModelForCausalLM.from_pretrained(out) is not None
    (out / "notes.txt").write_text("added by the user")
    before = _tree(tmp_path)
    capsys.readouterr()
    assert main(["convert", str(folder / "weights.ckpt"), str(out), "--overwrite"]) == 1
    assert "did not write (notes.txt)" in _one_line_error(capsys)
    assert _tree(tmp_path) == before


# ----------------------------------------------------------------------------------------------------------------------
# 2. Interrupted overwrite: at every instant the output is the complete old result or the complete new one
# ----------------------------------------------------------------------------------------------------------------------
def _convert(out: Path, **kwargs) -> dict:
    return convert_to_folder(str(DNA / "weights.ckpt"), out, overwrite=True, max_shard_size="100KB", **kwargs)


def _assert_complete(out: Path, modulation_shift: float) -> None:
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.modulation_shift == modulation_shift
    assert len(list(out.glob("model-*.safetensors"))) > 1  # sharded: every shard must be there


@pytest.mark.parametrize("when", ["before the swap", "after the swap"])
def test_sigint_during_overwrite_leaves_old_or_new(tmp_path, monkeypatch, when):
    out = tmp_path / "converted"
    _convert(out)
    real_swap = output_folder._swap_in

    def interrupted(staging, target):
        if when == "after the swap":
            real_swap(staging, target)
        raise KeyboardInterrupt

    monkeypatch.setattr(output_folder, "_swap_in", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _convert(out, modulation_shift=0.05)
    _assert_complete(out, 0.05 if when == "after the swap" else 0.0)
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]  # no staging folder left behind


def test_sigint_fallback_swap_without_renameat2(tmp_path, monkeypatch):
    out = tmp_path / "converted"
    _convert(out)
    monkeypatch.setattr(output_folder, "_exchange", lambda a, b: False)
    _convert(out, modulation_shift=0.05)
    _assert_complete(out, 0.05)
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]


SIGKILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from hyena_hf import output_folder
    from hyena_hf.conversion.export import convert_to_folder
    real_swap = output_folder._swap_in
    def killed(staging, out):
        if sys.argv[2] == "after":
            real_swap(staging, out)
        os.kill(os.getpid(), signal.SIGKILL)
    output_folder._swap_in = killed
    convert_to_folder(sys.argv[1], sys.argv[3], overwrite=True, max_shard_size="100KB", modulation_shift=0.05)
""")


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_during_overwrite_leaves_old_or_new(tmp_path, when):
    out = tmp_path / "converted"
    _convert(out)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run(
        [sys.executable, "-c", SIGKILL_SCRIPT, str(DNA / "weights.ckpt"), when, str(out)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL
    _assert_complete(out, 0.05 if when == "after" else 0.0)
    assert any(".hyena-hf-staging-" in p.name for p in tmp_path.iterdir())  # what the killed run left
    _convert(out)  # the next run clears it
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]


# ----------------------------------------------------------------------------------------------------------------------
# 3 - 5. Checkpoints: nothing changes the process, nothing allocates beyond the file, errors name the cause
# ----------------------------------------------------------------------------------------------------------------------
def _zip_checkpoint(
    path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None, compression=zipfile.ZIP_STORED
) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/version", "3\n")
        for name, data in (records or {}).items():
            archive.writestr(f"archive/data/{name}", data)
    return path


def _build_on_class(module: str, name: str) -> bytes:
    """GLOBAL module.name; {'hacked': True}; BUILD: sets an attribute on the class object itself."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n}X\x06\x00\x00\x00hackedq\x00\x88sb."


@pytest.mark.parametrize("target", [("torch.storage", "TypedStorage"), ("collections", "Counter")])
def test_build_on_an_allowed_class_is_refused(tmp_path, target):
    path = _zip_checkpoint(tmp_path / "evil.ckpt", _build_on_class(*target))
    with pytest.raises(ConversionError, match="refusing .*applies state to"):
        load_checkpoint(path)
    assert not hasattr(torch.storage.TypedStorage, "hacked") and not hasattr(collections.Counter, "hacked")
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.load(good, weights_only=True)["w"].sum() == 2  # torch's own loader still works


def test_bytearray_allocation_is_not_performed(tmp_path):
    # bytearray(3 << 30) as the whole pickle: 398 bytes that used to allocate 3 GB
    payload = b"\x80\x02cbuiltins\nbytearray\n\x8a\x05\x00\x00\x00\xc0\x00\x85R."
    path = _zip_checkpoint(tmp_path / "alloc.ckpt", payload)
    tracemalloc.start()
    try:
        with pytest.raises(ConversionError, match="not a state dict"):
            extract_state_dict(load_checkpoint(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_compressed_storage_bomb_is_refused_before_reading(tmp_path):
    state = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, state)
    with zipfile.ZipFile(state) as archive:
        data_pkl = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    bomb = _zip_checkpoint(tmp_path / "bomb.ckpt", data_pkl, {"0": bytes(64 << 20)}, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ConversionError, match="expands to 67"):
        load_checkpoint(bomb)


def test_declared_storage_larger_than_its_record_is_refused(tmp_path):
    state = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, state)
    with zipfile.ZipFile(state) as archive:
        data_pkl = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    # numel 4 -> 2**40 in the persistent id (BININT 4 -> LONG1 would change lengths: patch the record instead)
    path = _zip_checkpoint(tmp_path / "short.ckpt", data_pkl, {"0": bytes(8)})
    with pytest.raises(ConversionError, match="declares 16 bytes for storage '0', whose record holds 8"):
        load_checkpoint(path)


def test_legacy_format_loads_and_is_bounded_by_the_file(tmp_path):
    weights = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    weights["tied"] = weights["a"]
    torch.save(weights, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    loaded = load_checkpoint(tmp_path / "legacy.pt")
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    raw = (tmp_path / "legacy.pt").read_bytes()
    # the storage of "a" declares 12 elements (BININT1 12); make it 2**30 (BININT): 4 GiB from a 600-byte file
    assert raw.count(b"cpuq\x06K\x0cN") == 1
    (tmp_path / "huge.pt").write_bytes(raw.replace(b"cpuq\x06K\x0cN", b"cpuq\x06J\x00\x00\x00\x40N"))
    with pytest.raises(ConversionError, match="declares 4294967296 bytes of tensor data in a"):
        load_checkpoint(tmp_path / "huge.pt")
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) - 40])
    with pytest.raises(ConversionError, match="truncated or corrupt .*unexpected EOF"):
        load_checkpoint(tmp_path / "cut.pt")


def test_many_refused_globals_are_cached_and_bounded(tmp_path):
    repeated = b"\x80\x02" + b"cevil\nThing\n0" * 200_000 + b"N."  # GLOBAL + POP, one class
    before = len(checkpoint_io._placeholders)
    with pytest.raises(ConversionError, match="no tensors|not a state dict"):
        extract_state_dict(load_checkpoint(_zip_checkpoint(tmp_path / "same.ckpt", repeated)))
    assert len(checkpoint_io._placeholders) <= before + 1
    distinct = b"\x80\x02" + b"".join(b"cevil\nT%d\n0" % i for i in range(checkpoint_io.MAX_REFUSED_GLOBALS + 1))
    with pytest.raises(ConversionError, match="names more than 10000 distinct"):
        load_checkpoint(_zip_checkpoint(tmp_path / "many.ckpt", distinct + b"N."))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _state_dict_file(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "state.pt"
    torch.save(state, path)
    return path


RAW_ERROR_CASES = {
    "memo read before store": (lambda t: _zip_checkpoint(t / "m.ckpt", b"\x80\x02h\x05."), "memo entry 5"),
    "truncated pickle": (lambda t: _zip_checkpoint(t / "t.ckpt", b"\x80\x02}q\x00(X"), "truncated or corrupt"),
    "pickle of garbage": (lambda t: _zip_checkpoint(t / "g.ckpt", b"\x80\x02\xff\xfe"), "truncated or corrupt"),
    "not a checkpoint": (lambda t: _write(t / "x.ckpt", b"hello world"), "truncated or corrupt"),
    "int key": (lambda t: _state_dict_file(t, {3: torch.zeros(2)}), "key 3 is a int"),
    "tuple key": (lambda t: _state_dict_file(t, {("a", 1): torch.zeros(2)}), r"key \('a', 1\) is a tuple"),
    "sparse tensor": (lambda t: _state_dict_file(t, {"w": torch.zeros(3, 3).to_sparse()}), "w is a sparse_coo"),
    "meta tensor": (lambda t: _state_dict_file(t, {"w": torch.empty(3, device="meta")}), "w is a meta tensor"),
}


@pytest.mark.parametrize("case", sorted(RAW_ERROR_CASES))
def test_damaged_checkpoints_give_one_line_errors(tmp_path, case):
    make, expected = RAW_ERROR_CASES[case]
    path = make(tmp_path)
    with pytest.raises(ConversionError, match=expected) as info:
        extract_state_dict(load_checkpoint(path))
    assert len(str(info.value).splitlines()) == 1


def test_cli_reports_damaged_checkpoint_in_one_line(tmp_path, capsys):
    path = _zip_checkpoint(tmp_path / "m.ckpt", b"\x80\x02h\x05.")
    assert main(["convert", str(path), str(tmp_path / "out"), "--original-config", str(DNA / "config.json")]) == 1
    assert "memo entry 5" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def _dna_original(**changes) -> dict:
    config = json.loads((DNA / "config.json").read_text())
    for key, value in changes.items():
        section, _, field = key.rpartition(".")
        (config[section] if section else config)[field] = value
    return config


ORIGINAL_CONFIG_CASES = {
    "pad_vocab_size_multiple 0": ({"pad_vocab_size_multiple": 0}, "pad_vocab_size_multiple must be >= 1"),
    "fast_decay_pct 0": ({"layer.fast_decay_pct": 0}, r"modulation_fast_decay_pct \(fast_decay_pct\)"),
    "target 0": ({"layer.target": 0}, r"modulation_target \(target\)"),
    "layer is 5": ({"layer": 5}, "field layer must be a mapping"),
    "vocab_size text": ({"vocab_size": "twelve"}, "vocab_size must be an integer"),
    "modulate 'no'": ({"layer.modulate": "no"}, "layer.modulate must be true or false"),
    "w nan": ({"layer.w": float("nan")}, "layer.w must be a finite number"),
    "slow_decay_pct -1": ({"layer.slow_decay_pct": -1}, r"modulation_slow_decay_pct \(slow_decay_pct\)"),
}


@pytest.mark.parametrize("case", sorted(ORIGINAL_CONFIG_CASES))
def test_bad_original_config_fields_are_named(case):
    changes, expected = ORIGINAL_CONFIG_CASES[case]
    state_dict = extract_state_dict(load_checkpoint(DNA / "weights.ckpt"))
    with pytest.raises(ConversionError, match=expected):
        convert_state_dict(state_dict, _dna_original(**changes))


def test_non_json_original_config_names_the_file(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text("not json {")
    assert main(["convert", str(DNA / "weights.ckpt"), str(tmp_path / "out"), "--original-config", str(bad)]) == 1
    assert str(bad) in _one_line_error(capsys)


def test_modulation_shift_nan_on_the_cli_is_refused(tmp_path, capsys):
    assert main(["convert", str(DNA / "weights.ckpt"), str(tmp_path / "out"), "--modulation-shift", "nan"]) == 1
    assert "modulation-shift must be a finite number" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_vocab_size_smaller_than_the_tokenizer_is_refused(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(_dna_original(vocab_size=9)))
    with pytest.raises(ConversionError, match="tokenizer has 12 tokens but the model's vocab_size is 9"):
        convert_to_folder(str(DNA / "weights.ckpt"), tmp_path / "out", original_config=config)
    assert not (tmp_path / "out").exists()


VOCAB_CASES = {
    "not JSON": ("{'A': 7", "cannot be read"),
    "a list": (json.dumps(["A", "C"]), "must map tokens to ids, got a list"),
    "string ids": (json.dumps({"[UNK]": "6", "A": "7"}), "has id '6'"),
    "no [UNK]": (
        json.dumps({t: i for i, t in enumerate(["[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "A"])}),
        "lacks the special tokens",
    ),
    "duplicate ids": (json.dumps({"[UNK]": 6, "A": 6}), "same id"),
}


@pytest.mark.parametrize("case", sorted(VOCAB_CASES))
def test_damaged_tokenizer_vocabulary_is_named(tmp_path, case):
    text, expected = VOCAB_CASES[case]
    (tmp_path / "vocab.json").write_text(text)
    with pytest.raises(ValueError, match=expected) as info:
        HyenaDNATokenizer(vocab_file=str(tmp_path / "vocab.json"))
    assert str(tmp_path / "vocab.json") in str(info.value)


def test_commands_on_a_missing_local_path(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "absent"), "ACGT"]) == 1
    assert f"model folder not found: {tmp_path / 'absent'}" in _one_line_error(capsys)
    assert main(["generate", str(tmp_path), "ACGT"]) == 1
    assert "not a model folder (it has no config.json)" in _one_line_error(capsys)
    for command in (["eval", str(tmp_path / "absent"), "--local"], ["distill", str(tmp_path / "absent"), "out"]):
        assert main(command) == 1
        assert f"model folder not found: {tmp_path / 'absent'}" in _one_line_error(capsys)


# ----------------------------------------------------------------------------------------------------------------------
# 6. Config values that would produce NaN or hang
# ----------------------------------------------------------------------------------------------------------------------
CONFIG_CASES = {
    "layer_norm_epsilon nan": dict(layer_norm_epsilon=float("nan")),
    "layer_norm_epsilon text": dict(layer_norm_epsilon="abc"),
    "modulation_shift nan": dict(modulation_shift=float("nan")),
    "filter_sin_freq inf": dict(filter_sin_freq=float("inf")),
    "fast decay pct 0": dict(modulation_fast_decay_pct=0.0),
    "slow decay pct -inf": dict(modulation_slow_decay_pct=float("-inf")),
    "target 0": dict(modulation_target=0.0),
    "target -1": dict(modulation_target=-1.0),
    "rotary base 0": dict(rotary_emb_base=0.0),
    "rotary base -1": dict(rotary_emb_base=-1.0),
    "rotary base nan": dict(rotary_emb_base=float("nan")),
    "initializer_range inf": dict(initializer_range=float("inf")),
    "modulate 'no'": dict(modulate="no"),
    "residual_in_fp32 1": dict(residual_in_fp32="yes"),
    "layers 10**6": dict(num_hidden_layers=10**6),
    "inner mlps 10**6": dict(filter_num_inner_mlps=10**6),
    "hidden size 0": dict(hidden_size=0),
    "vocab size float": dict(vocab_size=12.5),
    "order True": dict(hyena_order=True),
    "attention index text": dict(attn_layer_idx=["0"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_rejects_values_that_give_nan_or_hang(case):
    changes = CONFIG_CASES[case]
    field = next(iter(changes))
    with pytest.raises(ValueError, match=f"HyenaConfig.{field}") as info:
        HyenaConfig(**changes)
    assert len(str(info.value).splitlines()) == 1


def test_config_json_with_bad_value_names_the_field(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["layer_norm_epsilon"] = "abc"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="HyenaConfig.layer_norm_epsilon"):
        HyenaConfig.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# 7. Loading silently wrong
# ----------------------------------------------------------------------------------------------------------------------
def _saved(tmp_path, **overrides) -> Path:
    tiny_model(modulation_shift=0.05, **overrides).save_pretrained(tmp_path)
    return tmp_path


def test_config_missing_a_function_field_is_an_error(tmp_path):
    folder = _saved(tmp_path)
    data = json.loads((folder / "config.json").read_text())
    del data["modulation_shift"]
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="missing modulation_shift"):
        AutoModelForCausalLM.from_pretrained(folder)
    # a value given at load time stands in for the missing field
    model = AutoModelForCausalLM.from_pretrained(folder, modulation_shift=0.05)
    assert model.config.modulation_shift == 0.05


def test_config_of_another_filter_type_is_an_error(tmp_path):
    folder = _saved(tmp_path)
    data = json.loads((folder / "config.json").read_text())
    data.update(filter_type="h3", ssm_state_size=8)
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="the checkpoint has no weights for backbone.layers.0.mixer"):
        AutoModelForCausalLM.from_pretrained(folder)


def test_corrupted_weights_are_an_error(tmp_path):
    folder = _saved(tmp_path)
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[-64:] = b"\xff" * 64  # 0xffffffff is a float32 NaN
    (folder / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="holds NaN or infinite values"):
        AutoModelForCausalLM.from_pretrained(folder)


def test_sequence_classification_head_may_be_new(tmp_path):
    from hyena_hf import HyenaForSequenceClassification

    model = HyenaForSequenceClassification.from_pretrained(_saved(tmp_path), num_labels=3)
    assert model.score.weight.shape == (3, 32)


# ----------------------------------------------------------------------------------------------------------------------
# 8. Model inputs
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 0), (0, 5), (0, 0)])
def test_empty_inputs_give_empty_outputs(variant_model, shape, device):
    ids = torch.zeros(shape, dtype=torch.long, device=device)
    out = variant_model(ids, output_hidden_states=True)
    assert out.logits.shape == (*shape, variant_model.config.vocab_size)
    assert len(out.hidden_states) == variant_model.config.num_hidden_layers + 1


def test_generate_with_an_empty_prompt_is_a_clear_error(device):
    model = tiny_model().to(device)
    with pytest.raises(ValueError, match="at least one token"):
        model.generate(torch.zeros(1, 0, dtype=torch.long, device=device), max_new_tokens=2)


@pytest.mark.parametrize("bad", [50, 55, 1000, -1])
def test_token_ids_outside_the_vocabulary_are_refused(bad, device):
    model = tiny_model().to(device)  # vocab_size 50, embedding padded to 56 rows
    ids = torch.tensor([[1, 2, bad]], device=device)
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, vocab_size=50\)"):
        model(ids)


def test_all_ignored_labels_give_zero_loss_not_nan(device):
    model = tiny_model().to(device)
    ids = torch.randint(0, 50, (2, 6), device=device)
    out = model(ids, labels=torch.full((2, 6), -100, device=device))
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # where GPT-2's loss is defined (Trainer's count of the accumulated batch), it is the same
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).to(device).eval()
    labels = torch.full((2, 6), -100, device=device)
    count = torch.tensor(7, device=device)
    ours = model(ids, labels=labels, num_items_in_batch=count).loss
    theirs = gpt2(ids, labels=labels, num_items_in_batch=count).loss
    assert ours.item() == theirs.item() == 0.0


def test_loss_equals_the_mean_cross_entropy(device):
    model = tiny_model().to(device)
    ids = torch.randint(0, 50, (2, 6), device=device)
    labels = ids.clone()
    labels[0, :4] = -100
    out = model(ids, labels=labels)
    reference = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, reference)


def test_nan_in_a_padded_position_does_not_poison_the_row(variant_model, device):
    torch.manual_seed(0)
    embeds = torch.randn(2, 7, variant_model.config.hidden_size, device=device)
    mask = torch.ones(2, 7, dtype=torch.long, device=device)
    mask[0, :3] = 0  # left padding
    clean = variant_model(inputs_embeds=embeds.masked_fill(~mask.bool()[..., None], 0), attention_mask=mask).logits
    poisoned = embeds.clone()
    poisoned[0, 1] = float("nan")
    logits = variant_model(inputs_embeds=poisoned, attention_mask=mask).logits
    assert torch.isfinite(logits[mask.bool()]).all()
    torch.testing.assert_close(logits[mask.bool()], clean[mask.bool()])


def test_bad_inputs_embeds_shape_is_named(device):
    with pytest.raises(ValueError, match=r"inputs_embeds must have shape \(batch, seq_len, 32\)"):
        tiny_model().to(device)(inputs_embeds=torch.zeros(1, 3, 31, device=device))
    with pytest.raises(ValueError, match="input_ids must hold integer token ids"):
        tiny_model().to(device)(torch.zeros(1, 3, device=device))


LABEL_CASES = {
    "out of the vocabulary": (
        lambda ids: ids.masked_fill(ids == ids[0, 2], 50),
        r"labels must be token ids in \[0, 50\) or -100 \(ignored\)",
    ),
    "negative, not -100": (
        lambda ids: ids.masked_fill(ids == ids[0, 2], -1),
        r"labels must be token ids in \[0, 50\) or -100 \(ignored\)",
    ),
    "float": (lambda ids: ids.float(), "labels must hold integer token ids"),
    "shorter than the input": (lambda ids: ids[:, :4], r"labels must have the shape \(batch, seq_len\)"),
}


@pytest.mark.parametrize("case", sorted(LABEL_CASES))
def test_bad_language_model_labels_are_named(case, device):
    # torch would report a batch-size mismatch of the flattened tensors, or a device-side assert on a GPU
    make_labels, message = LABEL_CASES[case]
    ids = torch.randint(0, 50, (2, 6), device=device)
    with pytest.raises(ValueError, match=message):
        tiny_model().to(device)(ids, labels=make_labels(ids))
    with pytest.raises(ValueError, match=message.replace("labels", "shift_labels")):
        tiny_model().to(device)(ids, labels=ids, shift_labels=make_labels(ids))


def test_labels_checked_against_the_kept_logits(device):
    ids = torch.randint(0, 50, (2, 6), device=device)
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len\) of the logits, \(2, 1\), got \(2, 6\)"):
        tiny_model().to(device)(ids, labels=ids, logits_to_keep=1)


def test_bad_classification_labels_are_named(device):
    model = HyenaForSequenceClassification(tiny_config(num_labels=3, pad_token_id=0)).to(device)
    ids = torch.randint(1, 50, (2, 6), device=device)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\) or -100 \(ignored\)"):
        model(ids, labels=torch.tensor([0, 3], device=device))
    with pytest.raises(ValueError, match="labels must hold one class id per sequence, 2"):
        model(ids, labels=torch.tensor([0, 1, 2], device=device))
    # valid labels still give transformers' loss: cross-entropy of the last real token's logits
    labels = torch.tensor([2, -100], device=device)
    out = model(ids, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
