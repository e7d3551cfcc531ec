"""Launch plans of the fused kernels: the slice of the spectrum one step holds on chip and the warp counts, per
kernel, transform size and ``tl.dot`` precision.

Every plan was chosen with the real compiler (``benchmarks/triton_resources.py``, no GPU needed) so that no
configuration spills registers on sm_80 or sm_90; ``tests/test_triton_compile_gate.py`` recompiles (or reads the
cached table of) exactly these configurations and fails on any spill. Where no spill-free configuration exists
(float32 data, whose three-pass TF32 products need about three times the registers, in the backward beyond
N = 1024) the plan is None and the caller takes another engine (the torch FFT for the backward).
"""

from __future__ import annotations

from typing import NamedTuple

FUSED_KERNELS = ("fused_forward", "fused_backward_inputs", "fused_backward_filter")


class FusedPlan(NamedTuple):
    rows: int  # spectrum rows per step (RB); tl.dot needs at least 16
    columns: int  # spectrum columns per step (CB)
    reload: bool  # reload the DFT constants at every use (volatile loads) instead of letting them stay live
    warps: tuple[int, ...]  # the warp counts the autotuner may choose from


# float32 data (three TF32 products per product): (kernel, N1, N2) -> plan; absent: no spill-free configuration.
_FLOAT32_PLANS = {
    ("fused_forward", 32, 16): FusedPlan(16, 16, False, (4, 8)),
    ("fused_forward", 32, 32): FusedPlan(16, 32, False, (4, 8)),
    ("fused_forward", 32, 64): FusedPlan(16, 32, False, (8,)),
    ("fused_forward", 64, 64): FusedPlan(16, 32, False, (8,)),
    ("fused_backward_inputs", 32, 16): FusedPlan(16, 16, False, (4, 8)),
    ("fused_backward_inputs", 32, 32): FusedPlan(16, 16, False, (4, 8)),
    ("fused_backward_inputs", 32, 64): FusedPlan(16, 64, False, (8,)),
    ("fused_backward_filter", 32, 16): FusedPlan(16, 16, False, (4, 8)),
    ("fused_backward_filter", 32, 32): FusedPlan(16, 32, False, (4, 8)),
}


def fused_plan(kernel: str, n1: int, n2: int, dot: str) -> FusedPlan | None:
    """The plan of ``kernel`` at transform size N1 x N2 for ``tl.dot`` precision ``dot`` (see
    :func:`.dft.dot_precision`), or None where the kernel would spill (or the size is beyond the fused kernels)."""
    if kernel not in FUSED_KERNELS:
        raise ValueError(f"unknown fused kernel {kernel!r}")
    if n1 > 64 or n2 > 64:
        return None
    if dot == "tf32":  # half-precision data: one TF32 product, every size fits
        return FusedPlan(16, min(32, n2), False, (4, 8))
    return _FLOAT32_PLANS.get((kernel, n1, n2))  # tf32x3, and IEEE float32 products alike
