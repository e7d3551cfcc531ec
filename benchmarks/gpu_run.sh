#!/usr/bin/env bash
# Everything the project measures on a GPU, in one command, on a CUDA machine with the project installed
# (`pip install --no-deps -e .`): the Triton kernel tests with the real compiler, the whole suite on CUDA, the long
# convolution (B=8 and B=64 with C=768 as in FlashFFTConv's table, bf16/fp16/fp32, forward and forward+backward, peak
# memory, bandwidth floor; 1M tokens at B=1), the model against GPT-2 (forward and training step), exact decoding (sum
# over the history vs relaxed FFT convolution) and transformers' own common model tests on the device. Every result lands in OUT_DIR (at most two folders deep; one STEPS group per call
# stays within the device tool's 8 files), with the GPU name, versions and the exact commands.
#
#   bash benchmarks/gpu_run.sh [OUT_DIR]          # default: $OUT, else gpu_results
#   bash benchmarks/gpu_run.sh --dry-run [OUT_DIR] # on a CPU: the same steps at toy sizes (interpreter, CPU device)
#   STEPS="tests" bash benchmarks/gpu_run.sh ...   # a subset: tests, common, long_conv, model (default: all four)
#
# The full suite also needs lm_eval, evaluate and datasets (the CPU extras): on a GPU image without a package index,
# fetch them first with `bash benchmarks/gpu_wheels.sh` and bring .whl/ along; this script installs what lies there.
# On an H100 (2026-11-24) the kernel tests took ~70 s and the rest of the suite ~3 min with pytest-xdist (-n 8),
# and bench_long_conv ~80 s per dtype at B=8: a call limited to 10 minutes runs one STEPS group at a time.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT_DIR=${1:-${OUT:-gpu_results}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
STEPS=${STEPS:-tests common long_conv model}
STATUS=0
wants() { [[ " $STEPS " == *" $1 "* ]]; }
run() {  # run NAME COMMAND...: log the command, keep going on failure, remember it
    local name=$1; shift
    echo "== $name: $*" | tee -a "$OUT_DIR/commands.log"
    "$@" || { echo "!! $name failed (exit $?)" | tee -a "$OUT_DIR/commands.log"; STATUS=1; }
}

if [ "$DRY" = 1 ]; then
    export HYENA_TEST_DEVICE=cpu TRITON_INTERPRET=1
    TESTS_KERNELS=(tests/test_triton_kernels.py -k "forward_matches_float64_reference and 100")
    TESTS_SUITE=(tests/test_half_precision.py -k "float16_builds")
    LC_LENGTHS=(1024); LC_B8=(--batch 2 --channels 8); LC_B64=(--batch 2 --channels 8); LC_1M=(--batch 1 --channels 4)
    LC_1M_LENGTHS=(4096); MODEL_LENGTHS=(1024); REPEATS=1
    RELAXED=(--device cpu --contexts 256 --batches 1 --steps 8)
else
    export HYENA_TEST_DEVICE=cuda
    unset TRITON_INTERPRET
    TESTS_KERNELS=(tests/test_triton_kernels.py tests/test_triton_compile_gate.py -m "slow or not slow")  # 1M too
    TESTS_SUITE=(tests --ignore=tests/test_triton_kernels.py --ignore=tests/test_triton_compile_gate.py)  # run above
    LC_LENGTHS=(1024 2048 4096 8192 16384 32768 65536); LC_B8=(--batch 8 --channels 768)
    LC_B64=(--batch 64 --channels 768); LC_1M=(--batch 1 --channels 768); LC_1M_LENGTHS=(1048576)
    MODEL_LENGTHS=(1024 2048 4096 8192 16384 32768 65536); REPEATS=5
    RELAXED=(--device cuda --contexts 1024 4096 16384 65536 131072 --batches 1 8 --steps 256)
fi

# carried wheels (benchmarks/gpu_wheels.sh) into a scratch site directory (first on the path: they shadow any copy the
# image has of the same packages)
if [ "$DRY" = 0 ] && compgen -G ".whl/*.whl" > /dev/null; then
    SITE=${TMPDIR:-/tmp}/hyena_hf_site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl || exit 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

"$PY" - "$OUT_DIR" "$DRY" <<'EOF'
import json, platform, sys
import torch, transformers
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = None
out, dry = sys.argv[1], sys.argv[2] == "1"
info = {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "dry_run": dry,
        "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton_version,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "command": "bash benchmarks/gpu_run.sh" + (" --dry-run" if dry else "")}
if not dry and not torch.cuda.is_available():
    sys.exit("gpu_run.sh: no CUDA device (use --dry-run on a CPU)")
open(f"{out}/environment.json", "w").write(json.dumps(info, indent=2))
print(info)
EOF
[ $? -eq 0 ] || exit 1

# pytest-xdist where installed (the GPU images have it): the suite in one call's time
PARALLEL=()
if [ "$DRY" = 0 ] && "$PY" -c "import xdist" 2>/dev/null; then PARALLEL=(-n 8 -p no:cacheprovider); fi
# the notebooks need Jupyter (nbformat, nbclient, a kernel), which GPU images may lack; they run on CPU in CI
"$PY" -c "import nbformat, nbclient" 2>/dev/null || TESTS_SUITE+=(--ignore=tests/test_notebooks.py)

# test logs: the kernel tests (real compiler on a GPU), then the whole suite on the device (pass/fail summary)
if wants tests; then
    run kernel_tests bash -c "$PY -m pytest -q -rf ${PARALLEL[*]} ${TESTS_KERNELS[*]@Q} > '$OUT_DIR/tests.log' 2>&1"
    run suite bash -c "$PY -m pytest -q -rfs ${PARALLEL[*]} ${TESTS_SUITE[*]@Q} 2>&1 | tail -n 300 >> '$OUT_DIR/tests.log'"
fi
# transformers' own common model and tokenizer tests on the device (from the carried sdist; downloaded on a dry run)
if wants common; then
    SDIST=(); for f in .whl/transformers-*.tar.gz; do [ -e "$f" ] && SDIST=(--sdist "$f"); done
    run common "$PY" tests/transformers_common/run.py "${SDIST[@]}" --output "$OUT_DIR/transformers_common.json"
fi
if wants long_conv; then
    run long_conv_b8 "$PY" benchmarks/bench_long_conv.py --lengths "${LC_LENGTHS[@]}" "${LC_B8[@]}" \
        --dtypes bfloat16 float16 float32 --repeats "$REPEATS" --out "$OUT_DIR/long_conv_b8"
    run long_conv_b64 "$PY" benchmarks/bench_long_conv.py --lengths 1024 4096 8192 32768 "${LC_B64[@]}" \
        --dtypes bfloat16 float16 --repeats "$REPEATS" --out "$OUT_DIR/long_conv_b64"
    run long_conv_1m "$PY" benchmarks/bench_long_conv.py --lengths "${LC_1M_LENGTHS[@]}" "${LC_1M[@]}" \
        --dtypes bfloat16 float32 --repeats "$REPEATS" --out "$OUT_DIR/long_conv_1m"
    # the crossover table entry for this GPU (commit it with: python benchmarks/crossover.py FILES --write)
    [ "$DRY" = 1 ] || run crossover bash -c "$PY benchmarks/crossover.py $OUT_DIR/long_conv_*/*.json >> '$OUT_DIR/commands.log'"
fi
if wants model; then
    run model_fwd "$PY" benchmarks/bench_model.py --lengths "${MODEL_LENGTHS[@]}" --repeats "$REPEATS" \
        --gpt2-max-length 65536 --out "$OUT_DIR/model"
    run model_fwdbwd "$PY" benchmarks/bench_model.py --lengths "${MODEL_LENGTHS[@]}" --repeats "$REPEATS" --backward \
        --gpt2-max-length 65536 --out "$OUT_DIR/model"
    # exact decoding, sum over the history vs relaxed FFT convolution: sets decoding.EXACT_RELAXED_MIN_HISTORY["cuda"]
    run relaxed_decoding "$PY" benchmarks/bench_relaxed_decoding.py "${RELAXED[@]}" --out "$OUT_DIR/model"
    run mixers "$PY" benchmarks/bench_mixers.py --length "${MODEL_LENGTHS[-1]}" --dtype bfloat16 --repeats "$REPEATS" \
        --out "$OUT_DIR/model"
fi
echo "results in $OUT_DIR:"; find "$OUT_DIR" -type f | sort
exit $STATUS
