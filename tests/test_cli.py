"""The hyena-hf command line: every subcommand has --help; the demo, eval, synthetic and generate paths run."""

import json

import pytest

from hyena_hf.cli import build_parser, main

SUBCOMMANDS = ["convert", "generate", "distill", "eval", "synthetic", "demo", "bench"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0 and "usage: hyena-hf" in capsys.readouterr().out


def test_demo_smoke_then_generate_distill_eval(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--steps",
                "40",
                "--train-examples",
                "400",
                "--fresh-prompts",
                "16",
                "--hidden-size",
                "32",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "held-out recall accuracy" in printed and "pipeline accuracy" in printed
    model_dir = out / "model"
    assert json.loads((model_dir / "demo_generation.json").read_text())["prompts"] == 16
    assert main(["generate", str(model_dir), "k1 v2 k3 v4 k1", "--max-new-tokens", "2"]) == 0
    assert main(["distill", str(model_dir), str(tmp_path / "modal"), "--state-size", "4"]) == 0
    report = json.loads((tmp_path / "modal" / "distill_report.json").read_text())
    assert report["state_size"] == 4 and len(report["relative_l2_error"]) == 2
    assert main(["demo", "--model", str(tmp_path / "modal"), "--prompt", "k1 v2 k1", "--max-new-tokens", "1"]) == 0


def test_synthetic_comparison_writes_table_json_and_png(tmp_path, capsys):
    assert (
        main(
            [
                "synthetic",
                "--steps",
                "10",
                "--train-examples",
                "200",
                "--hidden-size",
                "32",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "synthetic_results.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["hyena", "h3", "gpt2"]
    assert all(0.0 <= r["held_out_accuracy"] <= 1.0 for r in rows)
    assert (tmp_path / "synthetic_results.png").stat().st_size > 0
    assert "gpt2" in capsys.readouterr().out


def test_eval_cli_offline(tmp_path):
    from test_pipeline_trainer import text_model, train_tokenizer

    tokenizer = train_tokenizer()
    text_model(tokenizer).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    assert (
        main(
            ["eval", str(tmp_path / "m"), "--local", "--tasks", "boolq", "record", "--output", str(tmp_path / "r.json")]
        )
        == 0
    )
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    assert {(task, metric) for task, metric, _ in rows} >= {("boolq_local", "acc"), ("record_local", "f1")}


def test_errors_exit_nonzero_with_one_line(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "missing"), "hi"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hyena-hf generate: error:")
