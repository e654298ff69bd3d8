# Sourced by the one-call device scripts (gemv/run_gemv_check.sh, wg/run_wg_check.sh):
# the build environment, the log folder ($OUT, the device tool's folder, or
# benchmarks/out/), the GPU's name, and start_wheel_build, which builds and
# installs the extension with the sm_90a kernels in the background (log
# $OUT/build.log; its pid in WHEEL) while the harnesses use the GPU.
set -u
export CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
R=$PWD
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv > "$OUT/gpu.txt"
start_wheel_build() {
  (rm -rf build/wheel
   python3 -m pip wheel --no-build-isolation --no-deps -q -w build/wheel -C cmake.define.QUANTCORE_ENABLE_CUDA=ON \
     -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90a-real . > "$OUT/build.log" 2>&1 &&
   python3 -m pip install --no-deps -q --force-reinstall build/wheel/*.whl >> "$OUT/build.log" 2>&1
   echo "wheel rc=$?" >> "$OUT/build.log") &
  WHEEL=$!
}
