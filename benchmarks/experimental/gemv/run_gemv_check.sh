#!/bin/bash
# On an H100: the M = 1 GEMV (and the wgmma GEMM, with the variants that
# ../wg/make_variants.py writes) of this tree against a baseline copy of the
# kernel files, if benchmarks/experimental/baseline/ holds one, then the
# extension's CUDA tests, the issue benchmark and memcheck on the GEMV tests.
# The device copy of the tree has no git history, so make the baseline here
# first (untracked files travel with the tree; do not commit them):
#   mkdir -p benchmarks/experimental/baseline
#   for f in qgemv_cuda.cu qgemm_wg_cuda.cu; do
#     git show b19da15:cpp/kernels/cuda/$f > benchmarks/experimental/baseline/$f; done
# LEAN=1 runs the harnesses only; BENCH_ARGS passes arguments to the benchmark.
# Logs go to $OUT (the device tool's folder) or benchmarks/out/.
export QUANTCORE_W8_M1=${QUANTCORE_W8_M1:-1}  # the 8-bit decode kernel, opt-in until checked here
. benchmarks/experimental/device_setup.sh
B=benchmarks/experimental/baseline
WHEEL=""
[ -n "${LEAN:-}" ] || start_wheel_build  # LEAN=1: the harnesses only (no wheel, tests, benchmark or memcheck)
NV="nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -DQUANTCORE_HAVE_SM90A -Icpp/kernels/cuda -Icpp/kernels -Icpp"
PIDS=""
$NV -DQC_HAVE_LAUNCH_M1 '-DGEMVFILE="qgemv_cuda.cu"' benchmarks/experimental/gemv/gemv_harness.cu -lcublas -o /tmp/gh_new > "$OUT/hbuild_gh_new.log" 2>&1 & PIDS="$PIDS $!"
$NV '-DWGFILE="qgemm_wg_cuda.cu"' benchmarks/experimental/wg/wg_harness.cu -lcublas -o /tmp/wg_new > "$OUT/hbuild_wg_new.log" 2>&1 & PIDS="$PIDS $!"
if [ -f $B/qgemv_cuda.cu ]; then
  $NV "-DGEMVFILE=\"$R/$B/qgemv_cuda.cu\"" benchmarks/experimental/gemv/gemv_harness.cu -lcublas -o /tmp/gh_old > "$OUT/hbuild_gh_old.log" 2>&1 & PIDS="$PIDS $!"
  $NV "-DWGFILE=\"$R/$B/qgemm_wg_cuda.cu\"" benchmarks/experimental/wg/wg_harness.cu -lcublas -o /tmp/wg_old > "$OUT/hbuild_wg_old.log" 2>&1 & PIDS="$PIDS $!"
fi
python3 benchmarks/experimental/wg/make_variants.py /tmp/wg_variants > /dev/null
for f in /tmp/wg_variants/*.cu; do  # experimental variants of the wgmma kernel file
  [ -f "$f" ] || continue
  v=$(basename "$f" .cu); v=${v#qgemm_wg_}
  $NV "-DWGFILE=\"$f\"" benchmarks/experimental/wg/wg_harness.cu -lcublas -o /tmp/wg_$v > "$OUT/hbuild_wg_$v.log" 2>&1 & PIDS="$PIDS $!"
done
wait $PIDS
echo "[$SECONDS s] harnesses built: $(ls /tmp/gh_* /tmp/wg_* 2>/dev/null | tr '\n' ' ')"
/tmp/gh_new check > "$OUT/gemv_check.log" 2>&1; echo "gemv check rc=$?: $(grep -c OK "$OUT/gemv_check.log") OK"; grep -v OK "$OUT/gemv_check.log"
for v in $(ls -d /tmp/wg_* | grep -v wg_variants | sed 's,/tmp/wg_,,'); do
  [ $v = old ] && continue
  /tmp/wg_$v check > "$OUT/wg_check_$v.log" 2>&1; echo "wg $v check rc=$?: $(grep -c ' OK' "$OUT/wg_check_$v.log") OK"
done
{
  for rep in 1 2; do
    for v in old new; do
      [ -x /tmp/gh_$v ] || continue
      echo "== gemv $v rep $rep"; if [ $v = old ]; then NOCUBLAS=1 /tmp/gh_$v time; else /tmp/gh_$v time; fi
    done
  done
  echo "== gemv new, balanced grid"; BALANCE=1 NOCUBLAS=1 /tmp/gh_new time
  echo "== gemv new, QUANTCORE_PDL=0"; QUANTCORE_PDL=0 NOCUBLAS=1 /tmp/gh_new time
  [ -n "${SWEEP:-}" ] && { echo "== gemv new, byte sweep"; SHAPELIST=4096x4096,8192x4096,16384x8192,32768x8192,2048x8192,8192x2048 /tmp/gh_new time; }
} > "$OUT/gemv_time.log" 2>&1
echo "[$SECONDS s] gemv timings"; grep -v "^check" "$OUT/gemv_time.log"
{
  for rep in ${WG_REPS:-1}; do
    for v in $(ls -d /tmp/wg_* | grep -v wg_variants | sed 's,/tmp/wg_,,'); do
      echo "== wg $v rep $rep"; NOCHECK=1 MS=16,64,256 /tmp/wg_$v all
    done
  done
} > "$OUT/wg_time.log" 2>&1
echo "[$SECONDS s] wg timings"; cat "$OUT/wg_time.log"
[ -n "${LEAN:-}" ] && { echo "done (lean) at $SECONDS s"; exit 0; }
wait $WHEEL; echo "[$SECONDS s] wheel: $(tail -1 "$OUT/build.log")"
(cd /tmp && timeout 300 python3 -m pytest -q -p no:cacheprovider "$R/tests/python" -k "cuda and not notebook" \
   > "$OUT/tests.log" 2>&1); echo "[$SECONDS s] tests:"; tail -3 "$OUT/tests.log"
timeout 200 python3 benchmarks/bench_cuda_qlinear.py ${BENCH_ARGS:-} --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
echo "[$SECONDS s] bench:"; grep -h " M=\|copy" "$OUT/bench.log"
(cd /tmp && timeout 90 compute-sanitizer --tool memcheck python3 -m pytest -q -p no:cacheprovider \
   "$R/tests/python/test_cuda_kernels.py" -k "w8_one_row or dependent or matches" > "$OUT/memcheck.log" 2>&1); echo "memcheck: $(tail -1 "$OUT/memcheck.log")"; grep -m3 "ERROR SUMMARY\|Invalid" "$OUT/memcheck.log"
echo "done at $SECONDS s"
