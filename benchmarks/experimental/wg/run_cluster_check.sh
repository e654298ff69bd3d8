#!/bin/bash
# On an H100: the wgmma GEMM's split-K sum in a cluster's shared memory
# (QUANTCORE_WG_CLUSTER=1) against the workspace sum, checked and timed in one
# run. Logs go to $OUT (the device tool's folder) or benchmarks/out/.
set -u
export CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
R=$PWD
H=benchmarks/experimental/wg
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv > "$OUT/gpu.txt"
# The extension builds on the CPUs while the harness runs on the GPU.
(rm -rf build/wheel
 python3 -m pip wheel --no-build-isolation --no-deps -q -w build/wheel -C cmake.define.QUANTCORE_ENABLE_CUDA=ON \
   -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90a-real . > "$OUT/build.log" 2>&1 &&
 python3 -m pip install --no-deps -q --force-reinstall build/wheel/*.whl >> "$OUT/build.log" 2>&1
 echo "wheel rc=$?" >> "$OUT/build.log") &
WHEEL=$!
nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -DQUANTCORE_HAVE_SM90A '-DWGFILE="qgemm_wg_cuda.cu"' \
  -Icpp/kernels/cuda -Icpp/kernels -Icpp $H/wg_harness.cu -lcublas -o /tmp/wgh > "$OUT/harness_build.log" 2>&1 ||
  { echo "harness build failed"; tail -20 "$OUT/harness_build.log"; }
{
  for c in 0 1; do
    for k in 0 2 3 5 8 11 16; do
      echo "== CLUSTER=$c SPLITS=$k"
      if [ "$k" = 0 ]; then CLUSTER=$c /tmp/wgh check; else CLUSTER=$c SPLITS=$k /tmp/wgh check; fi
      echo "rc=$?"
    done
  done
} > "$OUT/checks.log" 2>&1
echo "harness checks: $(grep -c ' OK' "$OUT/checks.log") OK, $(grep -c 'FAIL' "$OUT/checks.log") FAIL, $(grep -c '^rc=[^0]' "$OUT/checks.log") bad exits"
for rep in 1 2; do for c in 0 1; do
  echo "== CLUSTER=$c rep $rep"; CLUSTER=$c NOCHECK=1 MS=16,32,64,128,256 /tmp/wgh all
done; done > "$OUT/modes.log" 2>&1
# PDL (on under graph capture) lets the next launch's CTAs in early; whole
# clusters may then wait for room, so the cluster sum is timed without it too.
for c in 0 1; do
  echo "== CLUSTER=$c QUANTCORE_PDL=0"; QUANTCORE_PDL=0 CLUSTER=$c NOCHECK=1 MS=16,64,256 /tmp/wgh all
done > "$OUT/nopdl.log" 2>&1
for k in 1 2 3 4 6 8 12 16; do
  echo "== CLUSTER=1 SPLITS=$k"; CLUSTER=1 SPLITS=$k NOCHECK=1 MS=16,32,64 /tmp/wgh all
done > "$OUT/sweep.log" 2>&1
for k in 1 2 3 4; do
  echo "== CLUSTER=1 SPLITS=$k"; CLUSTER=1 SPLITS=$k NOCHECK=1 MS=128,256 /tmp/wgh all
done >> "$OUT/sweep.log" 2>&1
python3 - "$OUT/modes.log" <<'PY'
import collections, re, sys
rows, mode = collections.defaultdict(list), None
for line in open(sys.argv[1]):
    m = re.match(r'== CLUSTER=(\d) rep', line)
    if m:
        mode = 'cluster' if m.group(1) == '1' else 'workspace'
        continue
    m = re.search(r'(\d+) x\s+(\d+) M=\s*(\d+) splits=\s*(\d+): wg\s+([\d.]+) us\s+bf16\s+([\d.]+)', line)
    if m:
        rows[m.group(1, 2, 3)].append(f"{mode} k{m.group(4)} {float(m.group(5)):.1f}us ({float(m.group(6)) / float(m.group(5)):.2f}x)")
for key, vals in rows.items():
    print(' x '.join(key[:2]), 'M=' + key[2], ' | '.join(vals))
PY
wait $WHEEL
tail -1 "$OUT/build.log"
(cd /tmp && timeout 300 python3 -m pytest -q -p no:cacheprovider "$R/tests/python/test_cuda_kernels.py" \
   "$R/tests/python/test_tc_layout.py" > "$OUT/tests.log" 2>&1); tail -3 "$OUT/tests.log"
(cd /tmp && timeout 150 compute-sanitizer --tool memcheck python3 -m pytest -q -p no:cacheprovider \
   "$R/tests/python/test_cuda_kernels.py" -k wgmma > "$OUT/memcheck.log" 2>&1); tail -3 "$OUT/memcheck.log"
timeout 120 python3 benchmarks/bench_cuda_qlinear.py --batches 16 32 64 128 256 --json "$OUT/bench_workspace.json" > "$OUT/bench_workspace.log" 2>&1
QUANTCORE_WG_CLUSTER=1 timeout 120 python3 benchmarks/bench_cuda_qlinear.py --batches 16 32 64 128 256 --json "$OUT/bench_cluster.json" > "$OUT/bench_cluster.log" 2>&1
for f in workspace cluster; do echo "== bench, $f sum"; grep -h " M=" "$OUT/bench_$f.log"; done
