// Standalone check and timing of the Hopper wgmma W4 GEMM (a kernel file named by
// -DWGFILE, normally cpp/kernels/cuda/qgemm_wg_cuda.cu) against a plain reference GEMM
// and cuBLAS bf16. Not built by CMake; README.md beside it has the commands.
#ifndef NO_CUBLAS
#include <cublas_v2.h>
#endif
#include <cuda_bf16.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cmath>
#include <algorithm>
#include WGFILE  // a kernel file: -DWGFILE=\"...\" (with -Icpp/kernels for split_k_plan.h)
using namespace quantcore::kernels;
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e_)); exit(1);} } while (0)
__global__ void fill_rand(uint32_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed; h ^= h >> 13; h *= 0x5bd1e995; h ^= h >> 15; p[i] = h;
  }
}
__global__ void to_bf16(const uint32_t* r, __nv_bfloat16* o, size_t n, float scale, float off) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    o[i] = __float2bfloat16((float(r[i] & 0xffff) / 65536.f + off) * scale);
}
__device__ int code_at(const int32_t* codes, int64_t K, int64_t n, int64_t k) {
  int64_t s = n / 32; int np = (n % 32) / 16, h = (n % 16) / 8, g = n % 8;
  int64_t kt = k / 32; int kk = k % 32, ks = kk / 16, hk = (kk % 16) / 8, t = (kk % 8) / 2, e = kk % 2;
  int lane = 4 * g + t;
  uint32_t word = uint32_t(codes[(s * (K / 32) + kt) * 128 + 4 * lane + 2 * ks + np]);
  return (word >> (4 * (e * 4 + h * 2 + hk))) & 15;
}
__global__ void ref_gemm(const __nv_bfloat16* x, const int32_t* codes, const __nv_bfloat16* scales, const uint8_t* zeros,
                         float* y, int64_t M, int64_t N, int64_t K, int64_t gs) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= M * N) return;
  int64_t m = i / N, n = i % N;
  float acc = 0;
  for (int64_t k = 0; k < K; ++k) {
    float z = zeros ? float(zeros[(k / gs) * N + n]) : 8.f;
    float w = (code_at(codes, K, n, k) - z) * __bfloat162float(scales[(k / gs) * N + n]);
    acc += __bfloat162float(x[m * K + k]) * w;
  }
  y[i] = acc;
}
__global__ void dequant_w(const int32_t* codes, const __nv_bfloat16* scales, __nv_bfloat16* w, int64_t N, int64_t K, int64_t gs) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * K; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n = i / K, k = i % K;
    w[i] = __float2bfloat16((code_at(codes, K, n, k) - 8.f) * __bfloat162float(scales[(k / gs) * N + n]));
  }
}
int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "all";
  struct Sh { int64_t N, K; };
  std::vector<Sh> shapes = {{28672, 8192}, {8192, 8192}, {14336, 4096}, {4096, 14336}};
  std::vector<int64_t> Ms = {64, 128, 256};
  if (getenv("SHAPELIST")) { shapes.clear(); for (char* p = strtok(getenv("SHAPELIST"), ","); p; p = strtok(nullptr, ",")) { int64_t n = atoll(p); const char* c = strchr(p, 'x'); shapes.push_back({n, c ? atoll(c + 1) : n}); } }
  if (getenv("SHAPES")) { std::vector<Sh> keep; int i = 0; for (auto sh : shapes) { if (strchr(getenv("SHAPES"), char('0' + i))) keep.push_back(sh); ++i; } shapes = keep; }
  if (getenv("MS")) { Ms.clear(); for (char* p = strtok(getenv("MS"), ","); p; p = strtok(nullptr, ",")) Ms.push_back(atoll(p)); }
  int64_t maxN = 28672, maxK = 14336, maxM = 512, gs = 128;
  struct Ck { int64_t M, N, K, gs; bool asym; };
  std::vector<Ck> checks = {{256, 8192, 8192, 128, false}, {37, 96, 256, 64, true}, {130, 544, 1024, 1024, true},
                            {200, 288, 640, 128, false}, {17, 256, 128, 32, true}, {256, 4096, 14336, 128, true}, {13, 544, 1024, 128, true}, {16, 4096, 4096, 32, false}, {64, 1056, 2048, 64, true}, {48, 8192, 8192, 128, false}, {300, 1024, 2048, -1, false}, {512, 2048, 4096, 128, false}};
  const int NW = 3;
  size_t code_words = size_t(maxN) * maxK / 8;
  std::vector<int32_t*> codes(NW);
  for (auto& c : codes) { CK(cudaMalloc(&c, code_words * 4)); fill_rand<<<1024, 256>>>((uint32_t*)c, code_words, rand()); }
  __nv_bfloat16 *x, *scales, *yq; uint8_t* zeros; float *yr, *ws; int32_t* counters; uint32_t* tmp;
  size_t nsc = size_t(maxK / 32) * maxN;
  CK(cudaMalloc(&tmp, sizeof(uint32_t) * std::max<size_t>(nsc, maxM * maxK)));
  CK(cudaMalloc(&x, 2 * maxM * maxK)); fill_rand<<<1024, 256>>>(tmp, maxM * maxK, 7); to_bf16<<<1024, 256>>>(tmp, x, maxM * maxK, 2.f, -0.5f);
  CK(cudaMalloc(&scales, 2 * nsc)); fill_rand<<<1024, 256>>>(tmp, nsc, 9); to_bf16<<<1024, 256>>>(tmp, scales, nsc, 0.01f, 0.5f);
  CK(cudaMalloc(&zeros, nsc));
  { std::vector<uint8_t> h(nsc); for (size_t i = 0; i < nsc; ++i) h[i] = (i * 2654435761u >> 7) & 15; CK(cudaMemcpy(zeros, h.data(), nsc, cudaMemcpyHostToDevice)); }
  CK(cudaMalloc(&yq, 2 * maxM * maxN)); CK(cudaMalloc(&yr, 4 * maxM * maxN));
  CK(cudaMalloc(&ws, sizeof(float) * (64 << 20))); CK(cudaMalloc(&counters, 4 << 20)); CK(cudaMemset(counters, 0, 4 << 20));
  auto args = [&](int64_t M, int64_t N, int64_t K, int64_t g, bool asym, int ci) {
    QGemmTcArgs a; a.x = x; a.codes = codes[ci]; a.scales = scales; a.zeros = asym ? zeros : nullptr; a.y = yq;
    a.workspace = ws; a.counters = counters; a.M = M; a.N = N; a.K = K; a.group_size = g < 0 ? K : g;
    a.act = GpuFloat::kBF16; a.scale = GpuFloat::kBF16; a.splits = 0; a.wgmma = 1;
    if (getenv("SPLITS")) a.splits = atoi(getenv("SPLITS"));
    if (getenv("CLUSTER")) a.cluster_sum = atoi(getenv("CLUSTER"));  // 1 / 0: split-K sum in the cluster's shared memory / the workspace (unset: the planner's)
    qgemm_wg_plan(a); return a;
  };
  if (!strcmp(mode, "waves")) {  // CTAs resident by cluster size, per tile config (bf16, symmetric)
    for (int64_t M : {16, 32, 64, 128}) {
      QGemmTcArgs a = args(M, 8192, 8192, gs, false, 0);
      visit(a, [&](auto cfg) {
        WgOccupancy occ;
        cudaError_t e = prepare<decltype(cfg)>(&occ);
        printf("M=%3ld waves (cluster of 1..16):", M);
        for (int k = 1; k <= kMaxSplits; ++k) printf(" %ld", (long)occ.waves[k]);
        printf("%s\n", e == cudaSuccess ? "" : " (query failed)");
        return cudaSuccess;
      });
    }
    return 0;
  }
  if (!strcmp(mode, "prof")) {
    int64_t M = atoll(argv[2]), N = atoll(argv[3]), K = atoll(argv[4]);
    for (int r = 0; r < 5; ++r) { QGemmTcArgs a = args(M, N, K, gs, false, r % NW); int e = qgemm_wg_cuda(a, 0); if (e) { printf("err %d\n", e); return 1; } }
    CK(cudaDeviceSynchronize()); return 0;
  }
  bool ok_all = true;
  if (getenv("NOCHECK")) checks.clear();
  for (auto c : checks) {
    QGemmTcArgs a = args(c.M, c.N, c.K, c.gs, c.asym, 0);
    if (!qgemm_wg_ok(a)) { printf("check %ld %ld %ld: not ok\n", c.M, c.N, c.K); continue; }
    int e = qgemm_wg_cuda(a, 0); CK(cudaDeviceSynchronize());
    if (e) { printf("launch err %d\n", e); exit(1); }
    ref_gemm<<<(c.M * c.N + 255) / 256, 256>>>(x, codes[0], scales, c.asym ? zeros : nullptr, yr, c.M, c.N, c.K, a.group_size);
    CK(cudaDeviceSynchronize());
    std::vector<__nv_bfloat16> hq(c.M * c.N); std::vector<float> hr(c.M * c.N);
    CK(cudaMemcpy(hq.data(), yq, 2 * c.M * c.N, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(hr.data(), yr, 4 * c.M * c.N, cudaMemcpyDeviceToHost));
    double maxerr = 0, maxref = 0; int64_t worst = 0;
    for (int64_t i = 0; i < c.M * c.N; ++i) { double d = fabs(__bfloat162float(hq[i]) - hr[i]); if (!(d <= maxerr)) { maxerr = d; worst = i; } maxref = std::max(maxref, (double)fabs(hr[i])); }
    bool ok = maxerr <= 0.02 * maxref + 1e-3;
    ok_all &= ok;
    printf("check M=%ld N=%ld K=%ld g=%ld asym=%d splits=%d%s: max err %.4g (ref max %.4g) %s\n", c.M, c.N, c.K, c.gs, c.asym, a.splits, a.cluster_sum == 1 ? "c" : "", maxerr, maxref, ok ? "OK" : "FAIL");
  }
  if (!ok_all) printf("CHECK FAILED\n");
  if (!strcmp(mode, "check")) return ok_all ? 0 : 1;
#ifndef NO_CUBLAS
  cublasHandle_t h; cublasCreate(&h);
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  cudaStream_t st; cudaStreamCreate(&st); cublasSetStream(h, st);
  for (auto s : shapes) {
    std::vector<__nv_bfloat16*> wb(2);
    for (auto& p : wb) { CK(cudaMalloc(&p, 2 * s.N * s.K)); dequant_w<<<4096, 256>>>(codes[0], scales, p, s.N, s.K, gs); }
    CK(cudaDeviceSynchronize());
    for (auto M : Ms) {
      const int R = 20;
      // graphs of R calls each, rotating weight copies
      cudaGraph_t gq, gb; cudaGraphExec_t xq, xb;
      QGemmTcArgs a0 = args(M, s.N, s.K, gs, false, 0);
      cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal);
      for (int r = 0; r < R; ++r) { QGemmTcArgs a = a0; a.codes = codes[r % NW]; qgemm_wg_cuda(a, st); }
      CK(cudaStreamEndCapture(st, &gq)); CK(cudaGraphInstantiate(&xq, gq, 0));
      float alpha = 1, beta = 0;
      cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal);
      for (int r = 0; r < R; ++r)
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, s.N, M, s.K, &alpha, wb[r % 2], CUDA_R_16BF, s.K, x, CUDA_R_16BF, s.K, &beta, yq, CUDA_R_16BF, s.N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      CK(cudaStreamEndCapture(st, &gb)); CK(cudaGraphInstantiate(&xb, gb, 0));
      std::vector<float> tq, tb;
      for (int rep = 0; rep < 7; ++rep) {
        float ms;
        cudaEventRecord(e0, st); cudaGraphLaunch(xq, st); cudaEventRecord(e1, st); CK(cudaEventSynchronize(e1)); cudaEventElapsedTime(&ms, e0, e1); tq.push_back(ms);
        cudaEventRecord(e0, st); cudaGraphLaunch(xb, st); cudaEventRecord(e1, st); CK(cudaEventSynchronize(e1)); cudaEventElapsedTime(&ms, e0, e1); tb.push_back(ms);
      }
      std::sort(tq.begin(), tq.end()); std::sort(tb.begin(), tb.end());
      CK(cudaGetLastError());
      double uq = tq[3] * 1000 / R, ub = tb[3] * 1000 / R;
      printf("%6ld x %6ld M=%4ld splits=%2d%s: wg %7.1f us  bf16 %7.1f us  ratio %.2fx  (%.0f TFLOPS)\n", s.N, s.K, M, a0.splits, a0.cluster_sum == 1 ? "c" : "w", uq, ub, ub / uq, 2.0 * M * s.N * s.K / uq / 1e6);
      cudaGraphExecDestroy(xq); cudaGraphExecDestroy(xb); cudaGraphDestroy(gq); cudaGraphDestroy(gb);
    }
    for (auto p : wb) cudaFree(p);
  }
#endif
  return 0;
}
