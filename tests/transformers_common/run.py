"""Run transformers' own common model tests (``ModelTesterMixin``, ``ConfigTester``, ``TrainingTesterMixin``) on
the four Hyena variants, and its common tokenizer tests (``TokenizerTesterMixin``) on the HyenaDNA tokenizer, as
transformers runs them for every in-library model.

The tests come from the sdist of the installed transformers version (downloaded with pip into a scratch folder; the
project holds none of their code). The sdist lacks three helper modules the mixins import; they are replaced by
stand-ins: the generation mixin (empty: generate is covered by the project's own tests), the export mixin (empty:
tests/test_conformance.py exports every variant) and ``config_common_kwargs`` (the transformers 5 fields of
``PreTrainedConfig``); the tokenizer tests read a DNA sample text. Each variant (and the tokenizer) runs in its own
pytest process; the JSON lists every failure and whether it is a known, deliberate deviation
(:data:`KNOWN_DEVIATIONS`). Exit code 1 on any other failure.

    python tests/transformers_common/run.py --output benchmarks/results/transformers_common_tests.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

HERE = Path(__file__).resolve().parent
VARIANTS = ["hyena", "h3", "hyena_attention", "modal", "tokenizer"]

# Failures by design, with the reason (README: loading and resizing).
KNOWN_DEVIATIONS = {
    "test_model_weights_reload_no_missing_tied_weights": (
        "from_pretrained refuses a checkpoint that lacks backbone weights (one line naming them) instead of "
        "initialising them randomly behind a warning; the test loads a file holding none"
    ),
    "test_resize_tokens_embeddings": (
        "the embedding keeps vocab_size rounded up to pad_vocab_size_multiple rows (as the original models); the test "
        "expects exactly vocab_size rows"
    ),
    "test_resize_embeddings_untied": "as test_resize_tokens_embeddings, for the untied head",
    "test_pretokenized_inputs": (
        "the test joins words with spaces; a space is not a DNA character and becomes [UNK], as in the original "
        "tokenizer"
    ),
    "test_padding_to_multiple_of": (
        "model_max_length is 1_000_002 as in the released tokenizers, not a multiple of 8; transformers refuses "
        "truncation to it together with pad_to_multiple_of=8"
    ),
}

STAND_INS = {
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        '    "return_dict": False, "output_hidden_states": True, "torchscript": True, "dtype": "float16",\n'
        '    "tie_word_embeddings": False, "is_decoder": True, "architectures": ["BertModel"],\n'
        '    "finetuning_task": "translation", "id2label": {0: "label"}, "label2id": {"label": "0"},\n'
        '    "tokenizer_class": "BertTokenizerFast", "prefix": "prefix", "bos_token_id": 6, "pad_token_id": 7,\n'
        '    "eos_token_id": 8, "sep_token_id": 9, "task_specific_params": {"translation": "some_params"},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
}


def fetch_test_tree(scratch: Path, sdist: Path | None = None) -> Path:
    """transformers' ``tests/`` from ``sdist`` (default: the sdist of the installed version, downloaded with pip),
    with the stand-ins and the Hyena modules."""
    if sdist is None:
        version = transformers.__version__
        pip = [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-binary", ":all:"]
        subprocess.run([*pip, "--no-deps", "-q", "-d", str(scratch)], check=True)
        sdist = scratch / f"transformers-{version}.tar.gz"
    version = sdist_version(sdist)
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(f"transformers-{version}/tests/")]
        archive.extractall(scratch, members=members, filter="data")
    tests = scratch / f"transformers-{version}" / "tests"
    for relative, text in STAND_INS.items():
        (tests / relative).parent.mkdir(parents=True, exist_ok=True)
        (tests / relative).write_text(text)
    for folder, name, template in (
        ("hyena", "test_modeling_hyena.py", "hyena_common_tests.py"),
        ("hyenadna", "test_tokenization_hyenadna.py", "hyenadna_tokenizer_common_tests.py"),
    ):
        (tests / "models" / folder).mkdir(parents=True, exist_ok=True)
        (tests / "models" / folder / name).write_text((HERE / template).read_text())
    (tests / "fixtures").mkdir(exist_ok=True)  # the tokenizer tests read a sample text: DNA here
    (tests / "fixtures" / "sample_text.txt").write_text("\n".join(["ACGTTGCANNACGGTACCAT" * 3] * 10))
    for folder in [tests, *(p for p in tests.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return tests


def sdist_version(sdist: Path) -> str:
    """``transformers-5.23.0.tar.gz`` -> ``5.23.0``."""
    match = re.fullmatch(r"transformers-(.+)\.tar\.gz", Path(sdist).name)
    if not match:
        raise SystemExit(f"--sdist {sdist}: not a transformers sdist (transformers-VERSION.tar.gz)")
    return match.group(1)


def run_variant(tests: Path, variant: str) -> dict:
    """One pytest process: the model tests of ``variant``, or the tokenizer tests for ``"tokenizer"``. A failure not
    in :data:`KNOWN_DEVIATIONS`, a test error or a pytest run that did not finish counts as unexpected."""
    module = "hyenadna/test_tokenization_hyenadna.py" if variant == "tokenizer" else "hyena/test_modeling_hyena.py"
    inherited = os.environ.get("PYTHONPATH")  # e.g. the carried wheels' site directory on a GPU machine
    env = dict(
        os.environ,
        HYENA_COMMON_VARIANT=variant,
        RUN_TRAINING_TESTS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(tests.parent), inherited) if p),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rfE",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore",
            f"tests/models/{module}",
        ],
        cwd=tests.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = result.stdout.splitlines()
    failed = sorted({m.group(1) for line in lines if (m := re.search(r"FAILED.*::(test_\w+)", line))})
    problems = {line: "UNEXPECTED" for line in lines if line.startswith("ERROR")}  # collection or setup errors
    if result.returncode not in (0, 1) or (result.returncode == 1 and not failed and not problems):
        problems[f"pytest exit {result.returncode}"] = "UNEXPECTED: " + (result.stderr or result.stdout)[-300:]
    summary = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)), "")
    counts = {
        k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|subtests passed|subtests failed)", summary)
    }
    return {
        "summary": summary.strip("= "),
        "counts": counts,
        "failed": {**{name: KNOWN_DEVIATIONS.get(name, "UNEXPECTED") for name in failed}, **problems},
    }


def torch_device_name() -> str:
    """The device transformers' tests run on (they pick an accelerator where there is one)."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--sdist", type=Path, help="a transformers sdist to take the tests from (default: download)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tests = fetch_test_tree(Path(scratch), args.sdist)
        results = {v: run_variant(tests, v) for v in args.variants}
    unexpected = sorted({n for r in results.values() for n, why in r["failed"].items() if why.startswith("UNEXPECTED")})
    report = {
        "command": "python tests/transformers_common/run.py " + " ".join(sys.argv[1:]),
        "transformers": transformers.__version__,
        "tests_from": f"transformers-{sdist_version(args.sdist) if args.sdist else transformers.__version__} sdist",
        "device": torch_device_name(),
        "variants": results,
        "unexpected_failures": unexpected,
    }
    for variant, result in results.items():
        print(f"{variant:16s} {result['summary']}")
        for name, why in result["failed"].items():
            print(f"    {name}: {why}")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
