"""What transformers' common model tests check, for Hyena (modelled on how transformers tests Mamba): generate's
outputs and inputs, dtype loading, resizing, padding in every call pattern, torch.export, attention implementations,
loading without hyena-hf installed, and lm-evaluation-harness the standard way.

Not applicable here (as Mamba skips them too): tests of attention-only models (head masking, attention-specific
caches of every layer), since most layers of a Hyena model are long convolutions.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from hyena_hf import HyenaDNATokenizer, HyenaForCausalLM
from hyena_hf.cli import main

from conftest import CHECKPOINT_FILES, VARIANTS, fixture_dir, tiny_config, tiny_model

GENERATION_MODES = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, top_k=5),
    "beam search": dict(do_sample=False, num_beams=2),
    "beam sample": dict(do_sample=True, num_beams=2, top_k=5),
}


def _ids(bsz, seqlen, seed=0, device="cpu"):
    return torch.randint(1, 50, (bsz, seqlen), generator=torch.Generator().manual_seed(seed)).to(device)


# 1. generate forwards every keyword: hidden states (and attentions) come back in every decoding mode
@pytest.mark.parametrize("mode", sorted(GENERATION_MODES))
def test_generate_returns_hidden_states_and_attentions(device, mode):
    model = tiny_model(**VARIANTS["hyena3_attn_rotary"]).to(device)
    model.set_attn_implementation("eager")
    prompt = _ids(2, 6, device=device)
    torch.manual_seed(0)
    out = model.generate(
        prompt,
        max_new_tokens=4,
        pad_token_id=0,
        return_dict_in_generate=True,
        output_hidden_states=True,
        output_attentions=True,
        **GENERATION_MODES[mode],
    )
    layers = model.config.num_hidden_layers + 1
    assert len(out.hidden_states) == 4 and all(len(step) == layers for step in out.hidden_states)
    assert all(t is not None for step in out.hidden_states for t in step)
    assert len(out.attentions) == 4 and all(len(step) == 1 for step in out.attentions)  # one attention layer
    if mode == "greedy":  # the last step's final hidden state is the full forward's at that position
        with torch.no_grad():
            full = model(out.sequences[:, :-1], output_hidden_states=True).hidden_states[-1][:, -1]
        torch.testing.assert_close(out.hidden_states[-1][-1][:, -1], full, atol=1e-5, rtol=1e-5)


# 2. generate from inputs_embeds, and continue from inputs_embeds plus the returned cache
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_generate_from_inputs_embeds(device, variant):
    model = tiny_model(**VARIANTS[variant]).to(device).to(torch.float64)
    prompt = _ids(2, 7, seed=1, device=device)
    embeds = model.get_input_embeddings()(prompt)
    from_ids = model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
    from_embeds = model.generate(inputs_embeds=embeds, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(from_embeds, from_ids[:, 7:])  # only the new tokens, as transformers returns them
    first = model.generate(
        inputs_embeds=embeds, max_new_tokens=3, do_sample=False, pad_token_id=0, return_dict_in_generate=True
    )
    more = torch.cat([embeds, model.get_input_embeddings()(first.sequences)], dim=1)
    cont = model.generate(
        inputs_embeds=more, past_key_values=first.past_key_values, max_new_tokens=2, do_sample=False, pad_token_id=0
    )
    assert torch.equal(torch.cat([first.sequences, cont], 1)[:, :5], from_ids[:, 7:12])


# 3. dtype on loading (float16 and bfloat16; accuracy: test_half_precision.py)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_from_pretrained_dtype(tmp_path, device, dtype):
    tiny_model().save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=dtype).to(device)
    assert model.dtype == dtype
    logits = model(_ids(1, 9, device=device)).logits
    assert logits.dtype == dtype and torch.isfinite(logits).all()


# 4. resize_token_embeddings round-trips (tied and untied, with and without pad_to_multiple_of)
@pytest.mark.parametrize("pad_to_multiple_of", [None, 16])
@pytest.mark.parametrize("tie", [True, False])
def test_resize_token_embeddings_round_trip(tmp_path, tie, pad_to_multiple_of):
    torch.manual_seed(0)
    model = HyenaForCausalLM(tiny_config(vocab_size=105, tie_word_embeddings=tie)).eval()
    ids = torch.randint(0, 105, (2, 12))
    with torch.no_grad():
        before = model(ids).logits
    model.resize_token_embeddings(109, pad_to_multiple_of=pad_to_multiple_of)
    rows = 112  # 109 rounded up to a multiple of 8 (pad_vocab_size_multiple) or of 16
    assert model.config.vocab_size == 109 and model.get_input_embeddings().weight.shape[0] == rows
    assert model.get_output_embeddings().weight.shape[0] == rows
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        after = loaded(ids).logits
    assert after.shape[-1] == 109
    assert torch.equal(after[..., :105], before)  # the old tokens' logits are unchanged
    assert (loaded.lm_head.weight is loaded.backbone.embeddings.weight) == tie
    new_rows = loaded.get_input_embeddings().weight[105:109]
    old_mean = loaded.get_input_embeddings().weight[:105].mean(0)
    assert torch.allclose(new_rows, old_mean.expand_as(new_rows), atol=0.05)  # transformers' mean resizing
    clamped = ids.clamp(max=99)
    with torch.no_grad():
        kept = loaded(clamped).logits[..., :100]
        loaded.resize_token_embeddings(100)  # shrinking keeps the first tokens
        assert torch.equal(loaded(clamped).logits, kept)


# 5. padding inside a cached multi-token continuation
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_padding_in_a_cached_continuation(device, variant):
    model = tiny_model(**VARIANTS[variant]).to(device).to(torch.float64)
    ids = _ids(2, 20, device=device)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in the prompt
    mask[0, 12:14] = 0  # padding inside the new chunk
    mask[1, 15] = 0
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        prefill = model(ids[:, :10], attention_mask=mask[:, :10], use_cache=True)
        chunk = model(ids[:, 10:], attention_mask=mask, past_key_values=prefill.past_key_values).logits
    real = mask[:, 10:].bool()
    assert (chunk - full[:, 10:])[real].abs().max() < 1e-9


# 6. torch.export with and without a mask; the exported program gives the eager logits, with or without grad
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_torch_export(variant, masked):
    model = tiny_model(**VARIANTS[variant])
    ids = _ids(2, 40)
    kwargs = {}
    if masked:
        mask = torch.ones_like(ids)
        mask[1, :5] = 0
        kwargs["attention_mask"] = mask
    with torch.no_grad():
        program = torch.export.export(model, (ids,), kwargs=kwargs)
        eager = model(ids, **kwargs).logits
    exported = program.module()(ids, **kwargs).logits  # grad enabled here
    assert exported.requires_grad
    torch.testing.assert_close(exported.detach(), eager, atol=1e-5, rtol=1e-5)


# 7. attention implementations through transformers' interface; attention weights when asked
@pytest.mark.parametrize("variant", ["hyena3_attn_rotary", "h3_attn"])
def test_eager_equals_sdpa_and_attention_weights(tmp_path, device, variant):
    tiny_model(**VARIANTS[variant]).save_pretrained(tmp_path)
    ids = _ids(2, 20, device=device)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    logits = {}
    for implementation in ("eager", "sdpa"):
        model = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation=implementation).to(device)
        model = model.to(torch.float64).eval()
        assert model.config._attn_implementation == implementation
        with torch.no_grad():
            logits[implementation] = (
                model(ids, attention_mask=mask).logits,
                model(ids).logits,
                model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0),
            )
    for a, b in zip(logits["eager"], logits["sdpa"]):
        assert torch.equal(a, b) if a.dtype == torch.long else (a - b).abs().max() < 1e-10
    with torch.no_grad():
        weights = model(ids, attention_mask=mask, output_attentions=True).attentions
    assert len(weights) == 1 and weights[0].shape == (2, model.config.num_attention_heads, 20, 20)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones_like(weights[0][..., 0]))
    assert (weights[0].triu(1) == 0).all()  # causal
    assert (weights[0][1, :, 4:, :4] == 0).all()  # padded keys get no weight


# 8. loading without hyena-hf: saved, converted and tokenizer folders, with trust_remote_code=True
REMOTE_SCRIPT = """
import json, sys
sys.modules["hyena_hf"] = None  # hyena-hf is not installed here
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
folder, ids = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
base = AutoModel.from_pretrained(folder, trust_remote_code=True)
classifier = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=2)
with torch.no_grad():
    logits = model(ids).logits
result = {"config": type(config).__module__, "model": type(model).__module__, "base": type(base).__name__,
          "classifier": type(classifier).__name__, "logits": logits.tolist()}
try:
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    result["tokenizer"] = [type(tokenizer).__module__, tokenizer("ACGTN")["input_ids"]]
except OSError:
    pass
print("RESULT" + json.dumps(result))
"""


def _load_without_hyena_hf(folder: Path, ids: torch.Tensor, tmp_path: Path) -> dict:
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(folder), json.dumps(ids.tolist())],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


@pytest.mark.parametrize("variant", ["hyena3_attn_rotary", "h3_attn", "modal3"])
def test_saved_model_loads_without_hyena_hf(tmp_path, variant):
    model = tiny_model(**VARIANTS[variant])
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    HyenaDNATokenizer().save_pretrained(folder)
    ids = torch.tensor([[7, 8, 9, 10, 11, 7, 7]])
    remote = _load_without_hyena_hf(folder, ids, tmp_path)
    assert remote["model"].startswith("transformers_modules.") and remote["config"].startswith("transformers_modules.")
    assert remote["base"] == "HyenaModel" and remote["classifier"] == "HyenaForSequenceClassification"
    assert remote["tokenizer"][0].startswith("transformers_modules.")
    assert remote["tokenizer"][1] == [7, 8, 9, 10, 11, 1]
    with torch.no_grad():
        assert torch.equal(torch.tensor(remote["logits"]), model(ids).logits)
    # with hyena-hf installed, trust_remote_code=True runs the installed code
    installed = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert type(installed) is HyenaForCausalLM


def test_converted_folder_loads_without_hyena_hf(tmp_path):
    folder = fixture_dir("hyenadna_lm")
    out = tmp_path / "converted"
    assert main(["convert", str(folder / CHECKPOINT_FILES["hyenadna_lm"]), str(out)]) == 0
    ids = torch.tensor([[7, 8, 9, 10, 11, 8, 9]])
    remote = _load_without_hyena_hf(out, ids, tmp_path)
    installed = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.equal(torch.tensor(remote["logits"]), installed(ids).logits)
    assert remote["tokenizer"][1] == [7, 8, 9, 10, 11, 1]


# 9. lm-evaluation-harness the standard way, on a converted folder; hyena-hf eval on a partial data folder
def test_lm_eval_cli_on_a_converted_folder(tmp_path):
    folder = fixture_dir("hyenadna_lm")
    model_dir, tasks_dir = tmp_path / "converted", tmp_path / "tasks"
    assert main(["convert", str(folder / CHECKPOINT_FILES["hyenadna_lm"]), str(model_dir)]) == 0
    assert main(["eval-tasks", str(tasks_dir), "--tasks", "boolq", "record"]) == 0
    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={model_dir},trust_remote_code=True",
            "--include_path",
            str(tasks_dir),
            "--tasks",
            "boolq_local,record_local",
            "--limit",
            "3",
            "--output_path",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next((tmp_path / "results").rglob("results_*.json")).read_text())["results"]
    assert set(results) == {"boolq_local", "record_local"}
    assert 0.0 <= results["record_local"]["f1,none"] <= 1.0 and 0.0 <= results["boolq_local"]["acc,none"] <= 1.0


def test_hyena_hf_eval_on_a_folder_with_only_the_named_tasks(tmp_path, capsys):
    from hyena_hf.evaluation.harness import TINY_DATA

    data = tmp_path / "data"
    data.mkdir()
    (data / "cb.jsonl").write_text((TINY_DATA / "cb.jsonl").read_text())
    model_dir = tmp_path / "model"
    from test_pipeline_trainer import train_tokenizer

    tokenizer = train_tokenizer()
    HyenaForCausalLM(tiny_config(vocab_size=len(tokenizer), max_position_embeddings=512)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    assert main(["eval", str(model_dir), "--local", "--data-dir", str(data), "--tasks", "cb", "--limit", "2"]) == 0
    assert "cb_local" in capsys.readouterr().out


# 10. The DNA tokenizer counts and numbers added tokens as transformers' tokenizers do (found by transformers'
# TokenizerTesterMixin: len() ignored added tokens, so a second add_tokens reused their ids)
def test_dna_tokenizer_added_tokens(tmp_path):
    tokenizer = HyenaDNATokenizer()
    assert tokenizer.add_tokens(["<motif>", "<gap>"]) == 2
    assert tokenizer.add_tokens(["<exon>"]) == 1
    ids = tokenizer.convert_tokens_to_ids(["<motif>", "<gap>", "<exon>"])
    assert ids == [12, 13, 14] and len(tokenizer) == 15
    assert {"<motif>", "<gap>", "<exon>", "A", "[PAD]"} <= set(tokenizer.get_vocab())
    tokenizer.save_pretrained(tmp_path)
    reloaded = HyenaDNATokenizer.from_pretrained(tmp_path)
    assert len(reloaded) == 15 and reloaded.convert_tokens_to_ids(["<motif>", "<gap>", "<exon>"]) == ids
    assert reloaded("AC<gap>G<exon>", add_special_tokens=False).input_ids == [7, 8, 13, 9, 14]
    model = HyenaForCausalLM(tiny_config(vocab_size=12))
    model.resize_token_embeddings(len(reloaded))  # the usual step after adding tokens: every id gets a row
    assert model(torch.tensor([reloaded("AC<exon>").input_ids])).logits.shape[-1] == 15
    rna = HyenaDNATokenizer(characters=list("ACGU"))
    rna.save_pretrained(tmp_path / "rna")
    assert HyenaDNATokenizer.from_pretrained(tmp_path / "rna").get_vocab() == rna.get_vocab()
