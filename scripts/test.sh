#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs every test:
#   1. the C++ kernels' Catch2 tests through CTest (a torch-free build);
#   2. pytest: ops vs references, QuantLinear, tiny and real Hugging Face
#      models, save/load, the demo, and the docstring examples.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

export CCACHE_DIR=${CCACHE_DIR:-$PWD/.cache/ccache}
printf '\n== C++ kernel tests (Catch2 via CTest)\n'
cmake -S . -B build/cpp-tests -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DQUANTCORE_BUILD_PYTHON=OFF -DQUANTCORE_BUILD_TESTS=ON >/dev/null
cmake --build build/cpp-tests
ctest --test-dir build/cpp-tests --output-on-failure -j2

# No GPU here, but a broken CUDA kernel must still fail CI: compile them.
if command -v nvcc >/dev/null 2>&1; then
  printf '\n== CUDA kernel sources (nvcc, sm_80 and sm_90a, compile only)\n'
  cmake -S . -B build/cuda-compile -G Ninja -DCMAKE_BUILD_TYPE=Release -DQUANTCORE_BUILD_PYTHON=OFF \
    -DQUANTCORE_ENABLE_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=80-real;90a-real" >/dev/null
  cmake --build build/cuda-compile --target quantcore_cuda_kernels
else
  printf '\n== CUDA kernel sources: nvcc not found, not compiled\n'
fi

printf '\n== Python tests (pytest)\n'
# `import quantcore` finds the installed package: the repo root has no quantcore/ (sources are in python/).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m pytest -q -p no:cacheprovider tests/python \
  --doctest-modules "$(.venv/bin/python -c 'import quantcore, os; print(os.path.dirname(quantcore.__file__))')" \
  --ignore-glob='*/__main__.py' "$@"
