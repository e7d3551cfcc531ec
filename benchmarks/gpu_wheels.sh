#!/usr/bin/env bash
# The wheels the test suite needs beyond a GPU image's own packages (torch, triton, transformers, accelerate,
# safetensors, tokenizers, pytest, pytest-xdist), fetched into .whl/ (git-ignored) on a machine with a package index,
# for a GPU machine without one: gpu_run.sh installs whatever lies in .whl/ before it runs. Pure-Python packages only
# (any platform); the versions are the ones the suite passed with. Python 3.12 is the GPU images' interpreter.
#
#   bash benchmarks/gpu_wheels.sh          # then carry .whl/ to the GPU machine with the checkout
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl
mkdir -p "$DEST"
BINARY=(lm_eval==0.4.13 evaluate==0.4.6 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pytablewriter==1.2.1
    DataProperty==1.1.1 mbstrdecoder==1.1.5 pathvalidate==3.3.1 tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5
    chardet==6.0.0.post1 nltk==3.10.4 more-itertools==11.2.1 parameterized==0.9.0)
SOURCE_ONLY=(rouge_score==0.1.2 sqlitedict==2.1.0 word2number==1.1)  # no wheels on the index: built here
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform any --platform manylinux2014_x86_64 -d "$DEST" "${BINARY[@]}"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "${SOURCE_ONLY[@]}"
# transformers' own test mixins (tests/transformers_common/run.py --sdist), from the sdist of the pinned version
"$PY" -m pip download -q --no-deps --no-binary :all: -d "$DEST" "$(grep '^transformers==' constraints.txt)"
ls "$DEST"
