"""Turn ``bench_long_conv.py`` results from a GPU into the crossover table that ``long_conv_impl="auto"`` reads
(``hyena_hf/long_conv_crossover.json``): per call pattern (training: forward+backward; inference: the forward without
autograd) and dtype, the longest measured length at which the Triton kernels beat the PyTorch path (what it runs
there, see :func:`pytorch_path_seconds`) at that length and at every shorter one, with a correct Triton result.

    python benchmarks/crossover.py RESULTS.json [RESULTS.json ...] [--write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hyena_hf.ops import GPU_STORED_SPECTRA_MAX_LEN

TABLE = Path(__file__).resolve().parent.parent / "hyena_hf" / "long_conv_crossover.json"
# Largest Triton error (relative to the float64 result) accepted per dtype before its timings count.
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2, "float16": 1e-2}


def pytorch_path_seconds(row: dict, training: bool) -> float | None:
    """Time of what the PyTorch path runs on a GPU at this row's length. Training (forward+backward): autograd through
    the reference up to ``GPU_STORED_SPECTRA_MAX_LEN`` (its "reference" column), the explicit backward beyond.
    Inference (forward without autograd): the blocked forward at every length."""
    if not training:
        return row.get("hyena_hf_torch_fwd_s")
    short = row["length"] <= GPU_STORED_SPECTRA_MAX_LEN
    return row.get("reference_fwdbwd_s" if short else "hyena_hf_torch_fwdbwd_s")


def crossover(rows: list[dict], training: bool = True) -> dict[str, int]:
    """dtype -> longest length where Triton wins (forward+backward when ``training``, else the forward), from rows of
    one GPU (any batch and channel counts: all must win)."""
    by_dtype: dict[str, dict[int, bool]] = {}
    for row in rows:
        rival = pytorch_path_seconds(row, training)
        triton = row.get("triton_fwdbwd_s" if training else "triton_fwd_s")
        fast = (
            triton is not None
            and rival is not None
            and triton < rival
            and row.get("triton_max_rel_err", 1.0) <= TOLERANCE[row["dtype"]]
        )
        wins = by_dtype.setdefault(row["dtype"], {})
        wins[row["length"]] = wins.get(row["length"], True) and fast
    result = {}
    for dtype, wins in by_dtype.items():
        best = 0
        for length in sorted(wins):
            if not wins[length]:
                break
            best = length
        result[dtype] = best
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="bench_long_conv JSON files of one GPU")
    parser.add_argument("--write", action="store_true", help=f"update {TABLE}")
    args = parser.parse_args()
    runs = [json.loads(Path(p).read_text()) for p in args.results]
    gpus = {run.get("gpu") for run in runs}
    if len(gpus) != 1 or None in gpus:
        raise SystemExit(f"crossover.py: results of exactly one GPU needed, got {sorted(map(str, gpus))}")
    gpu = gpus.pop()
    rows = [row for run in runs for row in run["rows"]]
    entry = {"training": crossover(rows, training=True), "inference": crossover(rows, training=False)}
    print(json.dumps({gpu: entry}, indent=2))
    if args.write:
        table = json.loads(TABLE.read_text())
        table["gpus"][gpu] = entry
        TABLE.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
