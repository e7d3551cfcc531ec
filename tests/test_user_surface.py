"""What a user sees: the CLI (fast help, help text and defaults, version, exit codes, installed benchmarks), the
distillation report and its threshold, model cards through huggingface_hub, and the official SuperGLUE metrics."""

import argparse
import json
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard

from hyena_hf.cli import build_parser, main
from hyena_hf.distillation import DistillationError, distill

from conftest import CHECKPOINT_FILES, fixture_dir, tiny_model

# -- CLI ---------------------------------------------------------------------------------------------------------------
HELP_SCRIPT = """
import sys
sys.argv[0] = "hyena-hf"  # as the console script runs
from hyena_hf.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    print("EXIT", exit.code)
print("HEAVY", sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["convert", "--help"], ["--version"], ["convert"]])
def test_help_and_usage_errors_import_no_heavy_module(argv):
    proc = subprocess.run([sys.executable, "-c", HELP_SCRIPT, *argv], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
    assert f"EXIT {2 if argv == ['convert'] else 0}" in proc.stdout


def _subcommands(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_has_help_and_shows_its_default():
    for name, sub in _subcommands(build_parser()).items():
        assert sub.formatter_class is argparse.ArgumentDefaultsHelpFormatter, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)
        if any(action.option_strings and not isinstance(action, argparse._HelpAction) for action in sub._actions):
            assert "(default:" in sub.format_help(), name


def test_version_and_exit_codes(capsys, tmp_path):
    from hyena_hf import __version__

    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0 and __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["convert", "--dtype", "int3", "a", "b"])
    assert usage.value.code == 2 and "invalid choice: 'int3'" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "absent"), "hi"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hyena-hf generate: error: model folder not found")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--steps", "-1"], "argument --steps: must be a positive integer, got -1"),
        (["demo", "--fresh-prompts", "0"], "argument --fresh-prompts: must be a positive integer, got 0"),
        (["synthetic", "--learning-rate", "nan"], "argument --learning-rate: must be a number > 0, got nan"),
        (["generate", "m", "p", "--temperature", "-1"], "argument --temperature: must be a number >= 0, got -1"),
        (["generate", "m", "p", "--num-beams", "0"], "argument --num-beams: must be a positive integer, got 0"),
        (
            ["generate", "m", "p", "--max-new-tokens", "x"],
            "argument --max-new-tokens: must be a positive integer, got 'x'",
        ),
        (["distill", "m", "o", "--refine-steps", "-2"], "argument --refine-steps: must be an integer >= 0, got -2"),
        (["eval", "m", "--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
        (
            ["convert", "a", "b", "--max-shard-size", "abc"],
            "must be a positive size with a unit (KB, MB, GB or TB), got 'abc'",
        ),
    ],
)
def test_out_of_range_numbers_are_usage_errors(argv, message, capsys):
    """A count or rate outside its range is bad usage (exit 2, one line naming the option) before anything runs; it
    used to run as something else (demo --steps -1 trained for 3 epochs, a negative temperature decoded greedily) or
    fail inside (num_beams 0: division by zero)."""
    with pytest.raises(SystemExit) as usage:
        main(argv)
    assert usage.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_bench_runs_the_installed_module_never_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    marker = tmp_path / "ran"
    (tmp_path / "benchmarks" / "bench_long_conv.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    monkeypatch.chdir(tmp_path)
    ran = []
    import runpy

    monkeypatch.setattr(runpy, "run_module", lambda name, **kw: ran.append((name, list(sys.argv))))
    assert main(["bench", "long-conv", "--lengths", "64"]) == 0
    assert ran == [("hyena_hf.benchmarks.bench_long_conv", ["hyena_hf.benchmarks.bench_long_conv", "--lengths", "64"])]
    assert not marker.exists()
    import importlib

    assert importlib.util.find_spec("hyena_hf.benchmarks.bench_long_conv") is not None


# -- distillation report -----------------------------------------------------------------------------------------------
def test_distill_report_table_and_threshold(capsys):
    model = tiny_model(num_hidden_layers=2)
    with pytest.raises(
        DistillationError,
        match=r"state size 2 fits the filters too poorly \(layer 0 .*try "
        r"--state-size \d+, or --force",
    ):
        distill(model, state_size=2, max_error=1e-6)
    table = capsys.readouterr().out
    assert "| layer | relative L2 error | s[N] | s[2N] | suggested N |" in table
    modal, report = distill(model, state_size=2, max_error=1e-6, force=True, progress=False)
    assert modal.config.filter_type == "modal"
    assert set(report.suggested_state_size) == {0, 1} and all(n >= 1 for n in report.suggested_state_size.values())


def test_suggested_state_size_is_the_first_n_whose_spectrum_falls_below_the_floor():
    from hyena_hf.distillation import _suggested_state_size

    spectrum = torch.tensor([1.0, 0.5, 0.1, 0.02, 5e-3, 2e-3, 9e-4, 1e-4])  # first value below 1e-3 at index 6
    assert _suggested_state_size(spectrum) == 3  # s[2N] = s[6] < 1e-3, s[2(N-1)] = s[4] is not
    assert _suggested_state_size(torch.tensor([1.0, 5e-4])) == 1  # falls at index 1: one mode (a conjugate pair)
    assert _suggested_state_size(torch.tensor([1.0, 0.5, 0.2])) == 2  # never falls: all 3 directions, N = 2


def test_cli_distill_refuses_a_poor_fit_and_writes_nothing(tmp_path, capsys):
    source = tmp_path / "model"
    tiny_model().save_pretrained(source)
    out = tmp_path / "modal"
    assert main(["distill", str(source), str(out), "--state-size", "2", "--max-error", "1e-6"]) == 1
    assert "fits the filters too poorly" in capsys.readouterr().err
    assert not out.exists()
    assert main(["distill", str(source), str(out), "--state-size", "2", "--max-error", "1e-6", "--force"]) == 0
    report = json.loads((out / "distill_report.json").read_text())
    assert report["forced"] is True and report["state_size"] == 2 and set(report["relative_l2_error"]) == {"0", "1"}
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and "distilled" in card.data.tags
    assert "| layer | relative L2 error |" in card.text and "written with --force" in card.text


def test_cli_generate_continues_the_prompt_without_special_tokens(tmp_path, capsys):
    """HyenaDNA's tokenizer ends an encoded text with [SEP], its end-of-sequence token: `hyena-hf generate` must
    continue the prompt itself, as the text-generation pipeline does, not a sequence ended by [SEP]."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = fixture_dir("hyenadna_lm")
    out = tmp_path / "converted"
    assert main(["convert", str(folder / CHECKPOINT_FILES["hyenadna_lm"]), str(out)]) == 0
    capsys.readouterr()
    prompt = "ACGTTGCAAC"
    assert main(["generate", str(out), prompt, "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out.strip()
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[tokenizer.convert_tokens_to_ids(c) for c in prompt]])
    expected = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert printed == tokenizer.decode(expected[0], skip_special_tokens=True)
    ended = tokenizer(prompt, return_tensors="pt").input_ids  # the tokenizer's default appends [SEP]
    assert ended[0, -1] == tokenizer.sep_token_id
    after_sep = model.generate(ended, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert not torch.equal(after_sep[0, -6:], expected[0, -6:])  # the fixture tells the two apart
    assert main(["generate", str(out), "acgtAC", "--max-new-tokens", "1"]) == 0  # lower case is not in the vocabulary
    assert (
        "note: 4 of 6 prompt tokens are not in the tokenizer's vocabulary and became [UNK]" in capsys.readouterr().err
    )


# -- model cards -------------------------------------------------------------------------------------------------------
def test_converted_model_card_metadata_and_provenance(tmp_path):
    folder = fixture_dir("hyenadna_lm")
    out = tmp_path / "converted"
    assert (
        main(
            [
                "convert",
                str(folder / CHECKPOINT_FILES["hyenadna_lm"]),
                str(out),
                "--reference",
                str(folder / "fixture.safetensors"),
            ]
        )
        == 0
    )
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert {"hyena", "long-convolution", "hyenadna"} <= set(data["tags"])
    assert data["license"] == "other" and data["license_link"].startswith("https://github.com/HazyResearch/")
    info = json.loads((out / "conversion.json").read_text())
    assert info["sha256"] in card.text and "relative L2 error" in card.text


# -- official metrics --------------------------------------------------------------------------------------------------
def _metric(config):
    from hyena_hf.evaluation.harness import load_metric

    return load_metric(config)


def test_multirc_exact_match_f1a_f1m_by_hand():
    # question A (3 options): gold 1,0,1 predicted 1,1,1; question B (2 options): gold 0,1 predicted 0,1
    # question C (2 options): gold 1,0 predicted 0,0
    idx = [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1)]
    preds = [1, 1, 1, 0, 1, 0, 0]
    gold = [1, 0, 1, 0, 1, 1, 0]
    predictions = [
        {"idx": {"paragraph": p, "question": q, "answer": a}, "prediction": y} for (p, q, a), y in zip(idx, preds)
    ]
    out = _metric("multirc").compute(predictions=predictions, references=gold)
    assert out["exact_match"] == pytest.approx(1 / 3)  # only B entirely right
    # over all options: TP 3, FP 1, FN 1 -> F1a = 2*3 / (2*3 + 1 + 1)
    assert out["f1_a"] == pytest.approx(6 / 8)
    # per question precision: A 2/3, B 1, C 1 (nothing predicted); recall: A 1, B 1, C 0
    p, r = (2 / 3 + 1 + 1) / 3, (1 + 1 + 0) / 3
    assert out["f1_m"] == pytest.approx(2 * p * r / (p + r))


def test_other_superglue_metrics_by_hand():
    cb = _metric("cb").compute(predictions=[0, 1, 2, 0], references=[0, 1, 1, 0])
    # class F1s: 0 -> 1, 1 -> 2/3, 2 -> 0 (predicted once, never right): macro = 5/9
    assert cb["accuracy"] == 0.75 and cb["f1"] == pytest.approx(5 / 9)
    axb = _metric("axb").compute(predictions=[1, 0, 1, 0], references=[1, 0, 0, 0])
    # TP 1, TN 2, FP 1, FN 0: MCC = (1*2 - 1*0) / sqrt(2 * 1 * 3 * 2)
    assert axb["matthews_correlation"] == pytest.approx(2 / 12**0.5)
    record = _metric("record").compute(predictions=["the Lyon", "Paris"], references=[["Lyon", "Lyons"], ["Oslo"]])
    assert record == {"exact_match": 0.5, "f1": 0.5}
