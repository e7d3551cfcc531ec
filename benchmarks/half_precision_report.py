"""Half-precision accuracy of every golden fixture: logits of the model in bfloat16 / float16 against the same model in
float32 (relative L2 error, argmax agreement), for each route a user takes to a half-precision model.

    python benchmarks/half_precision_report.py [--output benchmarks/results/half_precision_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hyena_hf.benchmarks.timing import cpu_model  # noqa: E402
from hyena_hf.precision import logits_agreement  # noqa: E402

from conftest import CHECKPOINT_FILES, fixture_tensors, load_fixture_model  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _routes(name: str, dtype: torch.dtype, folder: Path) -> dict:
    """Route name -> builder of the half-precision model: each way a user reaches one."""
    from transformers import AutoModelForCausalLM

    def saved_in_half():
        half_folder = folder.parent / f"{folder.name}-{dtype}"
        if not half_folder.exists():
            load_fixture_model(name).to(dtype).save_pretrained(half_folder)
        return AutoModelForCausalLM.from_pretrained(half_folder, dtype="auto")

    return {
        ".to(dtype)": lambda: load_fixture_model(name).to(dtype),
        "from_pretrained(dtype=)": lambda: AutoModelForCausalLM.from_pretrained(folder, dtype=dtype),
        "saved in half, dtype='auto'": saved_in_half,
    }


def main() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(CHECKPOINT_FILES):
            reference_model = load_fixture_model(name)
            folder = Path(tmp) / name
            reference_model.save_pretrained(folder)
            ids = [v for k, v in sorted(fixture_tensors(name).items()) if k.startswith("input_ids")]
            with torch.no_grad():
                reference = [reference_model(x).logits for x in ids]
            for dtype_name, dtype in DTYPES.items():
                for route, build in _routes(name, dtype, folder).items():
                    try:
                        model = build()
                    except Exception as exc:  # a route that fails outright (fp16 loading did, before the fix)
                        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                        rows.append({"fixture": name, "dtype": dtype_name, "route": route, "error": error})
                        print(f"{name:28s} {dtype_name:9s} {route:28s} error: {error}")
                        continue
                    with torch.no_grad():
                        logits = [model.eval()(x).logits for x in ids]
                    rel, agree = logits_agreement(
                        torch.cat([x.flatten(0, 1) for x in logits]), torch.cat([x.flatten(0, 1) for x in reference])
                    )
                    rows.append(
                        {
                            "fixture": name,
                            "dtype": dtype_name,
                            "route": route,
                            "relative_l2": rel,
                            "argmax_agreement": agree,
                        }
                    )
                    print(f"{name:28s} {dtype_name:9s} {route:28s} rel L2 {rel:.2e}  argmax {agree:.1%}")
    if args.output:
        Path(args.output).write_text(
            json.dumps({"cpu": cpu_model(), "torch": torch.__version__, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
