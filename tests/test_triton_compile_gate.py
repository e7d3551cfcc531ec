"""Real-compiler gate for the Triton kernels (no GPU needed): every configuration the launchers can produce compiles
for sm_90 and sm_80, within the device's shared memory, and spills no more registers than its kernel's budget.

The table (``benchmarks/results/triton_resources.json``) is rebuilt whenever the kernel sources or the Triton
version change (``python benchmarks/triton_resources.py``, a few minutes on 2 cores); otherwise it is read, and a
sample of configurations is recompiled here to show that it still matches the compiler.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").is_file():
    pytest.skip("this triton build has no bundled NVIDIA toolchain (ptxas/cuobjdump)", allow_module_level=True)

from hyena_hf.benchmarks import triton_resources  # noqa: E402

# Bytes of spilled registers per thread allowed per (kernel, arch): zero everywhere. The fused kernels' plans
# (kernels/plans.py) leave out the configurations that cannot be made spill-free; the launchers never run those.
STACK_BUDGET = json.loads((Path(__file__).parent / "triton_stack_budget.json").read_text())
RESULT_KEYS = ("registers", "stack_bytes", "shared_bytes", "error")


def _key(config: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in config.items() if k not in RESULT_KEYS))


@pytest.fixture(scope="module")
def table():
    return triton_resources.load_or_build()


def test_every_dispatched_configuration_compiles_within_budget(table):
    rows = {_key(row): row for row in table["rows"]}
    assert set(rows) == {_key(config) for config in triton_resources.configurations()}  # nothing left out
    for row in rows.values():
        assert "error" not in row, row
        assert row["shared_bytes"] <= triton_resources.SHARED_LIMIT[row["arch"]], row
        assert row["registers"] <= 255, row
        budget = STACK_BUDGET[row["kernel"]][row["arch"]]
        assert row["stack_bytes"] <= budget, (row, budget)


SAMPLE_SCRIPT = """
import json, sys
from hyena_hf.benchmarks.triton_resources import compile_one
print("ROWS" + json.dumps([compile_one(c) for c in json.loads(sys.argv[1])]))
"""


def test_the_table_matches_a_fresh_compile(table):
    by_kernel = {}
    for row in table["rows"]:
        by_kernel.setdefault(row["kernel"], row)  # the first configuration of each kernel
    sample = [{k: v for k, v in row.items() if k not in RESULT_KEYS} for row in by_kernel.values()]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", SAMPLE_SCRIPT, json.dumps(sample)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = json.loads(proc.stdout.split("ROWS", 1)[1])
    for row in fresh:
        cached = by_kernel[row["kernel"]]
        assert {k: row.get(k) for k in RESULT_KEYS} == {k: cached.get(k) for k in RESULT_KEYS}, (row, cached)
