"""Real-compiler resource table of every Triton kernel configuration the launchers can produce (no GPU needed).

Each configuration is compiled by ``triton.compile`` for sm_90 (H100) and sm_80 (A100); ``cuobjdump -res-usage``
(bundled with triton) reports registers, stack (= spilled registers) and shared memory per kernel. The table goes to
``benchmarks/results/triton_resources.json`` with a hash of the kernel sources and the Triton version: while that
hash matches, ``tests/test_triton_compile_gate.py`` reads the table instead of recompiling everything.

    python benchmarks/triton_resources.py [--jobs 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "triton_resources.json"
ARCHS = {"sm_90": 90, "sm_80": 80}
# Shared memory one block may use (H100: 227 KB, A100: 163 KB).
SHARED_LIMIT = {"sm_90": 227 * 1024, "sm_80": 163 * 1024}
DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
DOT_FOR = {"float32": "tf32x3", "bfloat16": "tf32", "float16": "tf32"}  # kernels.dft.dot_precision on NVIDIA


def kernel_sources_hash() -> str:
    """Hash of every kernel source file and the Triton version: the table is valid while it is unchanged."""
    import triton

    import hyena_hf.kernels as kernels

    digest = hashlib.sha256(triton.__version__.encode())
    for path in sorted(Path(kernels.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def configurations() -> list[dict]:
    """Every configuration the launchers produce: the fused kernels at each transform size up to MAX_FUSED_LEN with
    the tiles and warp counts of their plans (none where a plan is absent: the launchers do not run those; all
    gates and the skip on, the flags only remove code), and the multipass kernels at two sizes (their tiles are
    fixed, so larger N changes loop counts only) with the default 4 warps."""
    from hyena_hf.kernels.dft import factors
    from hyena_hf.kernels.fftconv import MAX_FUSED_LEN
    from hyena_hf.kernels.multipass import MODE_FILTER, MODE_INVERSE, TILE, _tile
    from hyena_hf.kernels.plans import FUSED_KERNELS, fused_plan

    sizes = sorted({factors(1 << k) for k in range(MAX_FUSED_LEN.bit_length())})
    configs = []
    for arch in ARCHS:
        for dtype in DTYPES:
            for n1, n2 in sizes:
                for kernel in FUSED_KERNELS:
                    plan = fused_plan(kernel, n1, n2, DOT_FOR[dtype])
                    for warps in plan.warps if plan else ():
                        configs.append(
                            {
                                "kernel": kernel,
                                "arch": arch,
                                "dtype": dtype,
                                "N1": n1,
                                "N2": n2,
                                "warps": warps,
                                "dot": DOT_FOR[dtype],
                                "rows": plan.rows,
                                "columns": plan.columns,
                                "reload": plan.reload,
                            }
                        )
            for length in (MAX_FUSED_LEN * 2, 1 << 16):
                n1, n2 = factors(length)
                base = {
                    "arch": arch,
                    "dtype": dtype,
                    "N1": n1,
                    "N2": n2,
                    "warps": 4,
                    "dot": DOT_FOR[dtype],
                    "tile": _tile(n1, n2, TILE),
                }
                configs.append({**base, "kernel": "multipass_column_dft"})
                configs.append({**base, "kernel": "multipass_row_dft", "mode": MODE_FILTER})
                configs.append({**base, "kernel": "multipass_row_dft", "mode": MODE_INVERSE})
                configs.append({**base, "kernel": "multipass_column_idft"})
    return configs


# Where each kernel lives, and how the launchers type its arguments: activations in the data dtype, DFT constants,
# spectra, scratch and the skip D in float32, sizes as int32; the flags as the heaviest variant (all gates and the
# skip on: the flags only remove code).
KERNELS = {
    "fused_forward": ("fftconv", "_fftconv_row_kernel"),
    "fused_backward_inputs": ("backward", "_input_gradient_kernel"),
    "fused_backward_filter": ("backward", "_filter_gradient_kernel"),
    "multipass_column_dft": ("multipass", "_column_dft"),
    "multipass_row_dft": ("multipass", "_row_dft"),
    "multipass_column_idft": ("multipass", "_column_idft"),
}
FP32_POINTERS = {
    f"{name}_ptr"
    for name in (
        "f1r",
        "f1i",
        "f2r",
        "f2i",
        "twr",
        "twi",
        "hr",
        "hi",
        "mr",
        "mi",
        "sr",
        "si",
        "qr",
        "qi",
        "ar",
        "ai",
        "br",
        "bi",
        "d",
        "dh",
    )
}
SCALARS = {"L": "i32", "C": "i32", "B": "i32", "row0": "i32", "inv_n": "fp32"}
FLAGS = {"HAS_PRE": True, "HAS_POST": True, "HAS_D": True, "HAS_GATE": True, "HAS_AUX": False, "CONJ": False}


def _source(config: dict):
    """(jit function, signature, constexprs) for one configuration, as the launcher passes them."""
    import importlib

    from triton.runtime import Autotuner

    module, name = KERNELS[config["kernel"]]
    fn = getattr(importlib.import_module(f"hyena_hf.kernels.{module}"), name)
    fn = fn.fn if isinstance(fn, Autotuner) else fn
    const = {"N1": config["N1"], "N2": config["N2"], "DOT": config["dot"]}
    if "tile" in config:
        const.update(BM=config["tile"], BN=config["tile"], BK=config["tile"])
    if "mode" in config:
        const["MODE"] = config["mode"]
    if "rows" in config:
        const.update(RB=config["rows"], CB=config["columns"], RELOAD=config["reload"])
    constexprs = {fn.arg_names[i] for i in fn.constexprs}
    const.update({n: FLAGS[n] for n in constexprs if n not in const})
    sig = {
        n: SCALARS.get(n) or ("*fp32" if n in FP32_POINTERS else f"*{DTYPES[config['dtype']]}")
        for n in fn.arg_names
        if n not in constexprs
    }
    sig.update(dict.fromkeys(const, "constexpr"))
    return fn, sig, const


def compile_one(config: dict) -> dict:
    """Compile one configuration; returns the table row (compile error as text, or registers / stack / shared)."""
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    row = dict(config)
    fn, sig, const = _source(config)
    try:
        compiled = triton.compile(
            ASTSource(fn=fn, signature=sig, constexprs=const),
            target=GPUTarget("cuda", ARCHS[config["arch"]], 32),
            options={"num_warps": config["warps"], "num_stages": 1},
        )
    except Exception as exc:  # a compile error is a gate failure, recorded with its first line
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        return row
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        usage = subprocess.run([str(tool), "-res-usage", cubin.name], capture_output=True, text=True).stdout
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    row.update(registers=int(fields["REG"]), stack_bytes=int(fields["STACK"]), shared_bytes=compiled.metadata.shared)
    return row


def build_table(jobs: int = 2) -> dict:
    configs = configurations()
    # fresh processes: the kernels must be imported without TRITON_INTERPRET to be compiled
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(compile_one, configs))
    import triton

    return {
        "source_hash": kernel_sources_hash(),
        "triton": triton.__version__,
        "command": "python benchmarks/triton_resources.py",
        "rows": rows,
    }


def load_or_build(jobs: int = 2) -> dict:
    """The committed table while the kernel sources are unchanged; otherwise a fresh one (written back)."""
    if RESULTS.is_file():
        table = json.loads(RESULTS.read_text())
        if table.get("source_hash") == kernel_sources_hash():
            return table
    table = build_table(jobs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(table, indent=1))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="compiles in parallel")
    args = parser.parse_args()
    table = build_table(args.jobs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(table, indent=1))
    for row in table["rows"]:
        print(json.dumps(row), file=sys.stdout)


if __name__ == "__main__":
    main()
