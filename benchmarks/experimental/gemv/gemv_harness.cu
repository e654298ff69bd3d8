// Standalone check and timing of the weight-only GEMV (a kernel file named by
// -DGEMVFILE, normally cpp/kernels/cuda/qgemv_cuda.cu) at M = 1, against a plain
// reference and cuBLAS bf16, outside torch. Not built by CMake; README.md beside
// it has the commands.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include GEMVFILE
using namespace quantcore::kernels;
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e_)); exit(1);} } while (0)

__global__ void fill_rand(uint32_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed; h ^= h >> 13; h *= 0x5bd1e995; h ^= h >> 15; p[i] = h;
  }
}
template <typename T>
__global__ void to_float16(const uint32_t* r, T* o, size_t n, float scale, float off) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    o[i] = from_float<T>((float(r[i] & 0xffff) / 65536.f + off) * scale);
}
// y[n] = sum_k x[k] (q[n, k] - z) s[n, k / gs], canonical layout, fp64.
__global__ void ref_gemv(const __nv_bfloat16* x, const int32_t* qw, const __half* s, const uint8_t* zeros, double* y,
                         int64_t N, int64_t K, int64_t gs, int bits) {
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  const int per = 32 / bits;
  double acc = 0;
  for (int64_t k = 0; k < K; ++k) {
    const uint32_t word = uint32_t(qw[n * (K / per) + k / per]);
    const int q = (word >> (bits * (k % per))) & ((1 << bits) - 1);
    const double z = zeros ? zeros[n * (K / gs) + k / gs] : double(1 << (bits - 1));
    acc += double(__bfloat162float(x[k])) * (q - z) * double(__half2float(s[n * (K / gs) + k / gs]));
  }
  y[n] = acc;
}
__global__ void empty_kernel(int) { wait_for_previous_grid(); allow_next_grid(); }

// BALANCE=1: the M = 1 kernel (bf16 x, fp16 scales, symmetric) with the grid cut
// to ceil(tiles / rounds), rounds = ceil(tiles / wave): every CTA gets the same
// number of tiles (within one) instead of some CTAs one more. Harness only.
#ifdef QC_HAVE_LAUNCH_M1
template <int BITS, int ROWS, int J>
int launch_balanced(const QGemvArgs& a, int warps, cudaStream_t s) {
  const auto kernel = qgemv_m1_kernel<__nv_bfloat16, __half, BITS, ROWS, J, 1, false>;
  DeviceInfo dev; current_device_info(dev);
  int per_sm = 0; cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 32 * warps, 0);
  const int64_t tiles = (a.N + ROWS - 1) / ROWS, wave = int64_t(dev.sms) * per_sm;
  const int64_t rounds = (tiles + wave - 1) / wave, grid = (tiles + rounds - 1) / rounds;
  return int(launch_early(kernel, unsigned(grid), unsigned(32 * warps), 0, s, dev, a));
}
int qgemv_balanced(const QGemvArgs& a, cudaStream_t s) {
  const int64_t chunks = a.K / (a.bits == 4 ? 32 : 16);
  if (chunks <= 256) return a.bits == 4 ? launch_balanced<4, 4, 1>(a, int((chunks + 31) / 32), s) : launch_balanced<8, 4, 1>(a, int((chunks + 31) / 32), s);
  return a.bits == 4 ? launch_balanced<4, 2, 2>(a, int((chunks + 63) / 64), s) : launch_balanced<8, 2, 2>(a, int((chunks + 63) / 64), s);
}
#else
int qgemv_balanced(const QGemvArgs& a, cudaStream_t s) { return qgemv_cuda(a, s); }
#endif

struct Timer {
  cudaStream_t st; cudaEvent_t e0, e1;
  Timer() { CK(cudaStreamCreate(&st)); cudaEventCreate(&e0); cudaEventCreate(&e1); }
  // us per call: a graph of R calls of f(i), median of 15 replays
  template <class F> double us(F&& f, int R = 20) {
    for (int i = 0; i < R; ++i) f(i, st);
    CK(cudaStreamSynchronize(st));
    cudaGraph_t g; cudaGraphExec_t x;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < R; ++i) f(i, st);
    CK(cudaStreamEndCapture(st, &g)); CK(cudaGraphInstantiate(&x, g, 0));
    std::vector<float> t;
    for (int rep = 0; rep < 15; ++rep) {
      float ms; cudaEventRecord(e0, st); CK(cudaGraphLaunch(x, st)); cudaEventRecord(e1, st);
      CK(cudaEventSynchronize(e1)); cudaEventElapsedTime(&ms, e0, e1); t.push_back(ms);
    }
    cudaGraphExecDestroy(x); cudaGraphDestroy(g); CK(cudaGetLastError());
    std::sort(t.begin(), t.end());
    return t[t.size() / 2] * 1000.0 / R;
  }
};

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "all";
  struct Sh { int64_t N, K; };
  std::vector<Sh> shapes = {{28672, 8192}, {8192, 8192}, {14336, 4096}, {4096, 14336}};
  if (getenv("SHAPELIST")) { shapes.clear(); for (char* p = strtok(getenv("SHAPELIST"), ","); p; p = strtok(nullptr, ",")) { int64_t n = atoll(p); const char* c = strchr(p, 'x'); shapes.push_back({n, c ? atoll(c + 1) : n}); } }
  const size_t pool_bytes = size_t(1) << 31;  // weights rotate through 2 GiB: each call reads from HBM
  char* pool; CK(cudaMalloc(&pool, pool_bytes)); fill_rand<<<4096, 256>>>((uint32_t*)pool, pool_bytes / 4, 1);
  const int64_t maxK = 32768, maxN = 32768;
  __nv_bfloat16 *x, *y; __half* scales; uint8_t* zeros; double* yr; uint32_t* tmp;
  const size_t nsc = size_t(maxN) * (maxK / 16);  // scales / zeros of the largest case (group 16)
  CK(cudaMalloc(&tmp, 4 * std::max<size_t>(nsc, maxK)));
  CK(cudaMalloc(&x, 2 * 4 * maxK)); fill_rand<<<1024, 256>>>(tmp, 4 * maxK, 7); to_float16<<<1024, 256>>>(tmp, x, 4 * maxK, 2.f, -0.5f);
  CK(cudaMalloc(&scales, 2 * nsc)); fill_rand<<<1024, 256>>>(tmp, nsc, 9); to_float16<<<1024, 256>>>(tmp, scales, nsc, 0.01f, 0.5f);
  CK(cudaMalloc(&zeros, nsc)); fill_rand<<<1024, 256>>>(tmp, nsc / 4, 11);
  CK(cudaMemcpy(zeros, tmp, nsc, cudaMemcpyDeviceToDevice));
  { std::vector<uint8_t> h(nsc); CK(cudaMemcpy(h.data(), zeros, nsc, cudaMemcpyDeviceToHost)); for (auto& v : h) v &= 15; CK(cudaMemcpy(zeros, h.data(), nsc, cudaMemcpyHostToDevice)); }
  CK(cudaMalloc(&y, 2 * 4 * maxN)); CK(cudaMalloc(&yr, 8 * maxN));
  auto args = [&](int bits, int64_t N, int64_t K, int64_t gs, bool asym, size_t offset) {
    QGemvArgs a; a.x = x; a.qweight = reinterpret_cast<const int32_t*>(pool + offset); a.scales = scales;
    a.zeros = asym ? zeros : nullptr; a.y = y; a.M = 1; a.N = N; a.K = K; a.bits = bits; a.group_size = gs;
    a.act = GpuFloat::kBF16; a.scale = GpuFloat::kF16; return a;
  };
  bool ok_all = true;
  if (!strcmp(mode, "check") || !strcmp(mode, "all")) {
    struct Ck { int bits; int64_t N, K, gs; bool asym; };
    std::vector<Ck> cks = {{8, 200, 640, 32, false}, {8, 203, 14336, 128, true}, {8, 203, 16416, 96, false},
                           {8, 4096, 8192, 8192, false}, {8, 37, 8192, 64, true}, {4, 203, 14336, 128, true},
                           {4, 200, 640, 64, false}, {4, 4096, 8192, 128, false}, {8, 100, 4096, 16, true}};
    for (auto c : cks) {
      QGemvArgs a = args(c.bits, c.N, c.K, c.gs, c.asym, 0);
      int e = qgemv_cuda(a, nullptr); CK(cudaDeviceSynchronize());
      if (e) { printf("launch error %d\n", e); return 1; }
      ref_gemv<<<(c.N + 127) / 128, 128>>>(x, a.qweight, scales, a.zeros, yr, c.N, c.K, c.gs, c.bits); CK(cudaDeviceSynchronize());
      std::vector<__nv_bfloat16> hy(c.N); std::vector<double> hr(c.N);
      CK(cudaMemcpy(hy.data(), y, 2 * c.N, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(hr.data(), yr, 8 * c.N, cudaMemcpyDeviceToHost));
      double num = 0, den = 0;
      for (int64_t i = 0; i < c.N; ++i) { double d = __bfloat162float(hy[i]) - hr[i]; num += d * d; den += hr[i] * hr[i]; }
      const double rel = std::sqrt(num / den);
      const bool ok = rel < 1.5e-2;  // bf16 output
      ok_all &= ok;
      printf("check W%d N=%ld K=%ld g=%ld asym=%d: rel err %.2e %s\n", c.bits, c.N, c.K, c.gs, c.asym, rel, ok ? "OK" : "FAIL");
    }
    if (!strcmp(mode, "check")) return ok_all ? 0 : 1;
  }
  Timer tm;
  cublasHandle_t h; cublasCreate(&h); cublasSetStream(h, tm.st);
  printf("empty kernel in a graph: %.2f us (PDL as configured)\n", tm.us([&](int, cudaStream_t s) {
    DeviceInfo dev; current_device_info(dev); launch_early(empty_kernel, 132, 128, 0, s, dev, 0); }));
  const int bitlist[2] = {4, 8};
  for (auto sh : shapes) {
    for (int bits : bitlist) {
      if (getenv("BITS") && atoi(getenv("BITS")) != bits) continue;
      const int64_t gs = bits == 4 ? 128 : sh.K;
      const size_t bytes = size_t(sh.N) * sh.K * bits / 8;
      const size_t copies = std::max<size_t>(2, std::min<size_t>(pool_bytes / bytes, (200u << 20) / bytes + 1));
      const double t = tm.us([&](int i, cudaStream_t s) { QGemvArgs a = args(bits, sh.N, sh.K, gs, false, (i % copies) * bytes); if (getenv("BALANCE")) qgemv_balanced(a, s); else qgemv_cuda(a, s); });
      const double wbytes = double(bytes) + double(sh.N) * (sh.K / gs) * 2;
      printf("%6ld x %6ld W%d: %7.2f us  %6.0f GB/s\n", sh.N, sh.K, bits, t, wbytes / t / 1e3);
    }
    if (getenv("NOCUBLAS")) continue;
    const size_t bytes = size_t(sh.N) * sh.K * 2;
    const size_t copies = std::max<size_t>(2, std::min<size_t>(pool_bytes / bytes, (200u << 20) / bytes + 1));
    float alpha = 1, beta = 0;
    const double t = tm.us([&](int i, cudaStream_t) {
      cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(sh.N), 1, int(sh.K), &alpha, pool + (i % copies) * bytes, CUDA_R_16BF, int(sh.K),
                   x, CUDA_R_16BF, int(sh.K), &beta, y, CUDA_R_16BF, int(sh.N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT); });
    printf("%6ld x %6ld bf16 cuBLAS: %7.2f us  %6.0f GB/s\n", sh.N, sh.K, t, double(bytes) / t / 1e3);
  }
  if (!ok_all) printf("CHECK FAILED\n");
  return ok_all ? 0 : 1;
}
