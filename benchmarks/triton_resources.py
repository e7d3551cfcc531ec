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
    """Every configuration the launchers produce: fused kernels for each transform size up to MAX_FUSED_LEN with the
    autotuned warp counts (all gates and the skip on: the flags only remove code), multipass kernels at two sizes
    (their tiles are fixed, so larger N changes loop counts only) with the default 4 warps."""
    from hyena_hf.kernels.dft import factors
    from hyena_hf.kernels.fftconv import MAX_FUSED_LEN
    from hyena_hf.kernels.multipass import MODE_FILTER, MODE_INVERSE, _tile

    sizes = sorted({factors(1 << k) for k in range(MAX_FUSED_LEN.bit_length())})
    configs = []
    for arch in ARCHS:
        for dtype in DTYPES:
            for n1, n2 in sizes:
                for kernel in ("fused_forward", "fused_backward"):
                    for warps in (4, 8, 16):
                        configs.append(
                            {
                                "kernel": kernel,
                                "arch": arch,
                                "dtype": dtype,
                                "N1": n1,
                                "N2": n2,
                                "warps": warps,
                                "dot": DOT_FOR[dtype],
                            }
                        )
            for length in (MAX_FUSED_LEN * 2, 1 << 16):
                n1, n2 = factors(length)
                tile = _tile(n1, n2, 32)
                base = {
                    "arch": arch,
                    "dtype": dtype,
                    "N1": n1,
                    "N2": n2,
                    "warps": 4,
                    "dot": DOT_FOR[dtype],
                    "tile": tile,
                }
                configs.append({**base, "kernel": "multipass_column_dft"})
                configs.append({**base, "kernel": "multipass_row_dft", "mode": MODE_FILTER})
                configs.append({**base, "kernel": "multipass_row_dft", "mode": MODE_INVERSE})
                configs.append({**base, "kernel": "multipass_column_idft"})
    return configs


def _signature(names: list[str], activation: str, pointer_types: dict[str, str], scalars: dict[str, str]) -> dict:
    sig = {}
    for name in names:
        if name in scalars:
            sig[name] = scalars[name]
        else:
            sig[name] = pointer_types.get(name, f"*{activation}")
    return sig


def _source(config: dict):
    """(jit function, signature, constexprs) for one configuration, as the launcher passes them."""
    from hyena_hf.kernels import backward, fftconv, multipass

    act = DTYPES[config["dtype"]]
    f32 = "*fp32"
    dft = {n: f32 for n in ("f1r_ptr", "f1i_ptr", "f2r_ptr", "f2i_ptr", "twr_ptr", "twi_ptr", "hr_ptr", "hi_ptr")}
    common = {"N1": config["N1"], "N2": config["N2"], "DOT": config["dot"]}
    if config["kernel"] == "fused_forward":
        fn = fftconv._fftconv_row_kernel.fn
        names = [
            "v_ptr",
            "pre_ptr",
            "post_ptr",
            "d_ptr",
            "out_ptr",
            "hr_ptr",
            "hi_ptr",
            "f1r_ptr",
            "f1i_ptr",
            "f2r_ptr",
            "f2i_ptr",
            "twr_ptr",
            "twi_ptr",
            "L",
            "C",
            "inv_n",
        ]
        sig = _signature(names, act, {**dft, "d_ptr": f32}, {"L": "i32", "C": "i32", "inv_n": "fp32"})
        const = {**common, "HAS_PRE": True, "HAS_POST": True, "HAS_D": True}
    elif config["kernel"] == "fused_backward":
        fn = backward._fftconv_backward_kernel.fn
        names = [
            "dy_ptr",
            "v_ptr",
            "pre_ptr",
            "post_ptr",
            "d_ptr",
            "hr_ptr",
            "hi_ptr",
            "dv_ptr",
            "dpre_ptr",
            "dpost_ptr",
            "dh_ptr",
            "f1r_ptr",
            "f1i_ptr",
            "f2r_ptr",
            "f2i_ptr",
            "twr_ptr",
            "twi_ptr",
            "B",
            "C",
            "L",
            "inv_n",
        ]
        sig = _signature(
            names, act, {**dft, "d_ptr": f32, "dh_ptr": f32}, {"B": "i32", "C": "i32", "L": "i32", "inv_n": "fp32"}
        )
        const = {**common, "HAS_PRE": True, "HAS_POST": True, "HAS_D": True}
    else:
        tiles = {"BM": config["tile"], "BN": config["tile"], "BK": config["tile"]}
        scratch = {
            n: f32
            for n in (
                "sr_ptr",
                "si_ptr",
                "qr_ptr",
                "qi_ptr",
                "ar_ptr",
                "ai_ptr",
                "br_ptr",
                "bi_ptr",
                "mr_ptr",
                "mi_ptr",
            )
        }
        fn = getattr(multipass, "_" + config["kernel"][len("multipass_") :])
        names = list(fn.arg_names)
        const_names = [
            n
            for n in names
            if n
            in {
                "N1",
                "N2",
                "BM",
                "BN",
                "BK",
                "DOT",
                "HAS_GATE",
                "MODE",
                "CONJ",
                "HAS_PRE",
                "HAS_POST",
                "HAS_D",
                "HAS_AUX",
            }
        ]
        scalars = {n: "i32" for n in ("L", "C", "row0")}
        scalars["inv_n"] = "fp32"
        pointer_names = [n for n in names if n not in const_names and n not in scalars]
        pointers = {**dft, **scratch, "d_ptr": f32}
        sig = _signature(
            [n for n in names if n not in const_names],
            act,
            {n: pointers.get(n, f"*{act}") for n in pointer_names},
            scalars,
        )
        const = {**common, **tiles}
        flags = {
            "HAS_GATE": True,
            "CONJ": False,
            "HAS_PRE": True,
            "HAS_POST": True,
            "HAS_D": True,
            "HAS_AUX": False,
            "MODE": config.get("mode"),
        }
        const.update({n: flags[n] for n in const_names if n in flags})
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
