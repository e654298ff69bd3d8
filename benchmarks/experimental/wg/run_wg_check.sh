#!/bin/bash
# On an H100: the wgmma GEMM's split-K sums (the planner's choice, the
# workspace, the cluster's shared memory) checked and timed side by side, then
# the extension's CUDA tests, memcheck and the issue benchmark, in one run.
# Logs go to $OUT (the device tool's folder) or benchmarks/out/.
. benchmarks/experimental/device_setup.sh
H=benchmarks/experimental/wg
start_wheel_build  # the extension builds on the CPUs while the harness runs on the GPU
nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -DQUANTCORE_HAVE_SM90A '-DWGFILE="qgemm_wg_cuda.cu"' \
  -Icpp/kernels/cuda -Icpp/kernels -Icpp $H/wg_harness.cu -lcublas -o /tmp/wgh > "$OUT/harness_build.log" 2>&1 ||
  { echo "harness build failed"; tail -20 "$OUT/harness_build.log"; }
/tmp/wgh waves
{
  for c in auto 0 1; do
    for k in 0 3 11 16; do
      echo "== CLUSTER=$c SPLITS=$k"
      env $([ $c = auto ] || echo CLUSTER=$c) $([ $k = 0 ] || echo SPLITS=$k) /tmp/wgh check
      echo "rc=$?"
    done
  done
} > "$OUT/checks.log" 2>&1
echo "[$SECONDS s] harness checks: $(grep -c ' OK' "$OUT/checks.log") OK, $(grep -c 'FAIL' "$OUT/checks.log") FAIL, $(grep -c '^rc=[^0]' "$OUT/checks.log") bad exits"
for rep in 1 2; do for c in auto 0 1; do
  echo "== CLUSTER=$c rep $rep"; env $([ $c = auto ] || echo CLUSTER=$c) NOCHECK=1 MS=16,32,64,128,256 /tmp/wgh all
done; done > "$OUT/modes.log" 2>&1
python3 - "$OUT/modes.log" <<'PY'
import collections, re, sys
rows, mode = collections.defaultdict(list), None
for line in open(sys.argv[1]):
    m = re.match(r'== CLUSTER=(\w+) rep', line)
    if m:
        mode = {'auto': 'plan', '0': 'ws', '1': 'cl'}[m.group(1)]
        continue
    m = re.search(r'(\d+) x\s+(\d+) M=\s*(\d+) splits=\s*(\d+)(\w): wg\s+([\d.]+) us\s+bf16\s+([\d.]+)', line)
    if m:
        rows[m.group(1, 2, 3)].append(f"{mode} {m.group(4)}{m.group(5)} {float(m.group(6)):.1f}")
for key, vals in rows.items():
    print(' x '.join(key[:2]), 'M=' + key[2], ' | '.join(vals))
PY
echo "[$SECONDS s] harness timings done"; wait $WHEEL; echo "[$SECONDS s] wheel"
tail -1 "$OUT/build.log"
(cd /tmp && timeout 300 python3 -m pytest -q -p no:cacheprovider "$R/tests/python" -k "cuda and not notebook" \
   > "$OUT/tests.log" 2>&1); echo "[$SECONDS s] tests:"; tail -3 "$OUT/tests.log"
timeout 150 python3 benchmarks/bench_cuda_qlinear.py --json "$OUT/bench_plan.json" > "$OUT/bench_plan.log" 2>&1
QUANTCORE_WG_CLUSTER=0 timeout 150 python3 benchmarks/bench_cuda_qlinear.py --json "$OUT/bench_workspace.json" > "$OUT/bench_workspace.log" 2>&1
echo "[$SECONDS s] benches done"; for f in plan workspace; do echo "== bench, $f"; grep -h " M=" "$OUT/bench_$f.log"; done
(cd /tmp && timeout 150 compute-sanitizer --tool memcheck python3 -m pytest -q -p no:cacheprovider \
   "$R/tests/python/test_cuda_kernels.py" -k wgmma > "$OUT/memcheck.log" 2>&1); tail -3 "$OUT/memcheck.log"
echo "done at $SECONDS s"
