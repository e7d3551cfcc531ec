"""`hyena-hf convert` and its Python API on every golden fixture: parity, layouts, outputs, failures."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hyena_hf import HyenaDNATokenizer
from hyena_hf.cli import main
from hyena_hf.conversion import convert_checkpoint, extract_state_dict, load_checkpoint
from hyena_hf.conversion import hyenadna as hyenadna_format
from hyena_hf.conversion.export import convert_to_folder

from conftest import CHECKPOINT_FILES, FIXTURE_NAMES, fixture_dir, fixture_tensors

FP64_ATOL = {"h3_lm": 1e-5}


def _check_logits(model, name, fp64=True):
    tensors = fixture_tensors(name)
    vocab = model.config.vocab_size
    keys = [k for k in tensors if k.startswith("input_ids")]
    for key in keys:
        target = "logits" + key[len("input_ids") :]
        with torch.no_grad():
            assert (model(tensors[key]).logits - tensors[target][..., :vocab]).abs().max() < 5e-3
    if fp64:
        model = model.to(torch.float64)
        for key in keys:
            target = "logits" + key[len("input_ids") :] + "_fp64"
            with torch.no_grad():
                diff = (model(tensors[key]).logits - tensors[target][..., :vocab]).abs().max().item()
            assert diff < FP64_ATOL.get(name, 1e-6), (key, diff)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_cli_convert_every_fixture(tmp_path, name, capsys):
    folder = fixture_dir(name)
    out = tmp_path / "converted"
    argv = [
        "convert",
        str(folder / CHECKPOINT_FILES[name]),
        str(out),
        "--reference",
        str(folder / "fixture.safetensors"),
    ]
    if not name.startswith("hyenadna"):  # HyenaDNA folders carry their original config.json next to the weights
        argv += ["--original-config", str(folder / "meta.json")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "parity logits" in printed
    info = json.loads((out / "conversion.json").read_text())
    assert info["parity"] and max(info["parity"].values()) < 5e-3
    assert len(info["sha256"]) == 64 and info["sha256"] in (out / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    _check_logits(model, name)
    if name.startswith("hyenadna"):
        tok = AutoTokenizer.from_pretrained(out)
        assert isinstance(tok, HyenaDNATokenizer)
        assert tok("ACGTN")["input_ids"] == [7, 8, 9, 10, 11, 1]
        assert model.config.modulation_shift == 0.0
    else:
        assert "GPT-2 tokenizer not reachable" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]  # no staging folder left


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_python_api_converts_every_fixture(name):
    folder = fixture_dir(name)
    model = convert_checkpoint(folder / CHECKPOINT_FILES[name], folder / "meta.json")
    _check_logits(model, name, fp64=False)


def test_round_trip_is_exact(tmp_path):
    folder = fixture_dir("safari_hyena_order3_attn")
    model = convert_checkpoint(folder / "model.ckpt", folder / "meta.json")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = fixture_tensors("safari_hyena_order3_attn")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_hyenadna_hf_layout_and_standalone_shift(tmp_path):
    """An -hf twin built from the fixture with our own mapping converts to the same model."""
    folder = fixture_dir("hyenadna_lm")
    canonical = hyenadna_format.canonicalize(extract_state_dict(load_checkpoint(folder / "weights.ckpt")))
    hf_dir = tmp_path / "hyenadna-hf"
    hf_dir.mkdir()
    save_file(
        {k: v.contiguous().clone() for k, v in hyenadna_format.to_hf_layout(canonical).items()},
        str(hf_dir / "model.safetensors"),
    )
    original = json.loads((folder / "config.json").read_text())
    hf_config = {
        "model_type": "hyenadna",
        "d_model": original["d_model"],
        "n_layer": original["n_layer"],
        "d_inner": original["d_inner"],
        "vocab_size": original["vocab_size"],
        "max_seq_len": original["layer"]["l_max"],
        "emb_dim": original["layer"]["emb_dim"],
        "filter_order": original["layer"]["filter_order"],
        "hyena_order": 2,
        "short_filter_order": 3,
        "num_inner_mlps": 2,
        "activation_freq": original["layer"]["w"],
        "pad_vocab_size_multiple": 8,
    }
    (hf_dir / "config.json").write_text(json.dumps(hf_config))
    info = convert_to_folder(str(hf_dir), tmp_path / "out")
    assert info["format"] == "hyenadna-hf"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    _check_logits(model, "hyenadna_lm", fp64=False)
    convert_to_folder(str(hf_dir), tmp_path / "standalone", modulation_shift=0.05)
    standalone = AutoModelForCausalLM.from_pretrained(tmp_path / "standalone").eval()
    tensors = fixture_tensors("hyenadna_lm")
    with torch.no_grad():
        hidden = standalone.backbone(tensors["input_ids"]).last_hidden_state
    assert (hidden - tensors["hidden_states_standalone"]).abs().max() < 1e-3


def test_h3_lightning_wrapped_equals_plain(tmp_path):
    folder = fixture_dir("h3_lm")
    plain = extract_state_dict(load_checkpoint(folder / "model.pt"))
    torch.save({"state_dict": {"model." + k: v for k, v in plain.items()}, "epoch": 3}, tmp_path / "wrapped.ckpt")
    model = convert_checkpoint(tmp_path / "wrapped.ckpt", folder / "meta.json")
    _check_logits(model, "h3_lm", fp64=False)


def test_hub_download_path_with_local_stand_in(tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "snapshots" / "0123abcd"
    shutil.copytree(fixture_dir("hyenadna_lm"), snapshot)
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None):
        calls.append((repo_id, allow_patterns))
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    info = convert_to_folder("LongSafari/hyenadna-tiny-1k-seqlen", tmp_path / "out")
    assert calls and calls[0][0] == "LongSafari/hyenadna-tiny-1k-seqlen" and "config.json" in calls[0][1]
    assert info["hub_commit"] == "0123abcd" and info["source"] == "hf://LongSafari/hyenadna-tiny-1k-seqlen"
    _check_logits(AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval(), "hyenadna_lm", fp64=False)


def test_push_to_hub_with_a_local_stand_in_for_the_hub(tmp_path, monkeypatch):
    """push_to_hub (model, tokenizer, card, conversion record) against a local folder standing in for the hub: the
    commits huggingface_hub would send are written there (no network)."""
    import types

    from huggingface_hub import HfApi, ModelCard

    remote = tmp_path / "remote"
    commits = []

    def create_repo(self, repo_id, **kwargs):
        return types.SimpleNamespace(repo_id=repo_id)

    def create_commit(self, repo_id, operations, commit_message=None, **kwargs):
        commits.append((repo_id, commit_message))
        for op in operations:
            target = remote / repo_id / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            source = op.path_or_fileobj
            target.write_bytes(Path(source).read_bytes() if isinstance(source, (str, Path)) else source.read())

    def validate(card, repo_type=None):  # the hub's YAML check, done locally
        data = ModelCard(str(card)).data.to_dict()
        assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(ModelCard, "validate", validate)
    folder = fixture_dir("hyenadna_lm")
    convert_to_folder(str(folder / "weights.ckpt"), tmp_path / "out", push_to_hub="me/hyena-test")
    assert {repo for repo, _ in commits} == {"me/hyena-test"}
    pushed = remote / "me/hyena-test"
    for name in (
        "model.safetensors",
        "config.json",
        "hyena_remote.py",
        "modeling_hyena.py",
        "vocab.json",
        "tokenizer_config.json",
        "hyena_remote_tokenizer.py",
        "README.md",
        "conversion.json",
    ):
        assert (pushed / name).is_file(), name
    assert (pushed / "README.md").read_text() == (tmp_path / "out" / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(pushed).eval()
    _check_logits(model, "hyenadna_lm", fp64=False)


def test_dtype_and_sharding(tmp_path):
    folder = fixture_dir("safari_hyena_lm")
    convert_to_folder(
        str(folder / "model.ckpt"),
        tmp_path / "out",
        original_config=folder / "meta.json",
        dtype="bfloat16",
        max_shard_size="100KB",
    )
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype="auto")
    assert model.dtype == torch.bfloat16


@pytest.mark.parametrize("problem", ["truncated", "contradicting_preset", "unknown_preset", "not_empty"])
def test_failures_are_one_line_and_leave_no_output(tmp_path, capsys, problem):
    folder = fixture_dir("safari_hyena_lm")
    source = folder / "model.ckpt"
    argv_extra = ["--original-config", str(folder / "meta.json")]
    out = tmp_path / "out"
    expected = {
        "truncated": "truncated or corrupt",
        "contradicting_preset": "d_model=864 but the tensors say 64",
        "unknown_preset": "unknown preset",
        "not_empty": "exists and is not empty",
    }[problem]
    if problem == "truncated":
        source = tmp_path / "cut.ckpt"
        source.write_bytes((folder / "model.ckpt").read_bytes()[:1000])
    elif problem == "contradicting_preset":
        argv_extra = ["--preset", "hyena-small-150b-tok"]
    elif problem == "unknown_preset":
        argv_extra = ["--preset", "hyena-gigantic"]
    elif problem == "not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("user data")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["convert", str(source), str(out), *argv_extra]) == 1
    err_lines = [line for line in re.split(r"[\r\n]+", capsys.readouterr().err) if "error:" in line]
    assert len(err_lines) == 1 and expected in err_lines[0], err_lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if problem == "not_empty":
        assert (out / "keep.txt").read_text() == "user data"
