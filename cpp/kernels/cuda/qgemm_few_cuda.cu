// W4A16 GEMM for 1-8 rows of x on the tensor-core layout (qgemm_tc_cuda.h).
//
// With so few rows the m16 tiles of the GEMM (qgemm_tc_cuda.cu) are mostly
// padding and its cp.async pipeline caps the weight stream. Here the weights
// are the mma's A operand and x^T its B (y^T = W x^T): a lane's 16-byte code
// load (two n16 x k16 blocks) dequantizes straight into A fragments, so codes
// go from global memory to registers (ld.global.nc, the next chunk's loads
// issued before the current chunk's math) and never through shared memory.
// x (M rows, padded so the B-fragment reads are conflict-free) sits in shared
// memory, loaded once per CTA. A persistent wave of CTAs walks 32-wide strips
// of outputs; the CTA's warps split each strip's K tiles (warp w: tiles w,
// w + W, ...) and add their fp32 sums in shared memory. Each K tile's
// (q - z) x sums are scaled in fp32.
//
// Tried and measured slower on the H100 (2026-11-24): cutting K into slices
// so that 9-16 rows fit in shared memory, with the slices' partial sums added
// through a workspace, both with codes in registers and with codes in
// shared memory by bulk (TMA) copies; the extra reductions per strip and the
// lower occupancy cost more than the m16 GEMM loses on padding.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>

#include "float_types.cuh"
#include "mma_w4.cuh"
#include "qgemm_few_cuda.h"
#include "weight_stream.cuh"

namespace quantcore::kernels {

namespace {

constexpr int kStripN = 32;  // output features per warp
constexpr int kTileK = 32;   // inputs per 16-byte code load of a lane
constexpr int kFewWarps = 8;
constexpr int kFewMaxM = 8;
constexpr int kFewPad = 8;  // elements after each row of x: rows start 4 banks apart

size_t few_smem(int64_t M, int64_t K) { return size_t(M) * size_t(K + kFewPad) * 2; }
constexpr size_t kFewMaxSmem = 200 * 1024;  // plus 16 KiB static: under the H100's 227 KiB
constexpr size_t kFewStaticSmem = sizeof(float) * 2 * kFewWarps * 8 * 32;  // the kernel's red[][][]

// D K tiles (16-byte code loads per lane) per chunk.
template <typename T, typename ScaleT, int D, bool ASYM>
__global__ void __launch_bounds__(32 * kFewWarps, 2) qgemm_w4_few_kernel(QGemmTcArgs a) {
  using H2 = typename Half2Of<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ float red[2][kFewWarps][8 * 32];  // per warp: accumulator j of lane l at j * 32 + l
  static_assert(sizeof(red) == kFewStaticSmem, "kFewStaticSmem must describe red");
  T* xs = reinterpret_cast<T*>(smem_raw);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int M = int(a.M), KT = int(a.K / kTileK), stride = int(a.K) + kFewPad;
  const int64_t strips = a.N / kStripN;
  const int per = (KT + kFewWarps - 1) / kFewWarps;  // K tiles per warp and strip
  const int cps = (per + D - 1) / D;                 // chunks per strip
  const int tpg = int(a.group_size / kTileK);
  const int64_t my_strips = strips > blockIdx.x ? (strips - 1 - blockIdx.x) / gridDim.x + 1 : 0;
  const int64_t n_chunks = my_strips * cps;

  // Codes of chunk c: strip blockIdx.x + (c / cps) gridDim.x, K tiles warp + kFewWarps (D (c % cps) + i).
  uint4 nxt[D];
  auto load_chunk = [&](int64_t c) {
    const int64_t s = c < n_chunks ? blockIdx.x + (c / cps) * gridDim.x : 0;
    const int kc = int(c % cps);
    const int32_t* src = a.codes + s * KT * 128 + lane * 4;
#pragma unroll
    for (int i = 0; i < D; ++i) {
      const int kt = warp + kFewWarps * (kc * D + i);
      nxt[i] = c < n_chunks && kt < KT ? load_codes_nc(src + int64_t(kt) * 128) : make_uint4(0, 0, 0, 0);
    }
  };
  // The first chunk of codes streams in before the wait, x after it
  // (wait_for_previous_grid in weight_stream.cuh says why that is safe).
  load_chunk(0);
  wait_for_previous_grid();
  {  // x -> shared memory, 16 bytes a copy
    const int pieces = int(a.K / 8);
    const T* x = reinterpret_cast<const T*>(a.x);
    for (int i = tid; i < M * pieces; i += 32 * kFewWarps) {
      const int m = i / pieces, p = i % pieces;
      *reinterpret_cast<uint4*>(xs + m * stride + p * 8) = __ldg(reinterpret_cast<const uint4*>(x + int64_t(m) * a.K) + p);
    }
  }
  __syncthreads();
  allow_next_grid();
  const H2 off_sym = splat<T>(Dequant<T>::kMagic + 8.f);
  const bool x_row = g < M;  // B column g is row g of x (zero past M)
  const T* xrow = xs + (x_row ? g : 0) * stride + 2 * t;
  float acc[2][4] = {};
  int parity = 0;
  for (int64_t c = 0; c < n_chunks; ++c) {
    uint4 cur[D];
#pragma unroll
    for (int i = 0; i < D; ++i) cur[i] = nxt[i];
    load_chunk(c + 1);
    const int64_t s = blockIdx.x + (c / cps) * gridDim.x;
    const int kc = int(c % cps);
    const int64_t n0 = s * kStripN;
    // The chunk's group scales and zeros, all requested before any is used (a
    // tile past K reads tile KT - 1's and is skipped): one wait per chunk.
    float sc[D][2][2];
    uint8_t zq[D][2][2];
#pragma unroll
    for (int i = 0; i < D; ++i) {
      const int kt = min(warp + kFewWarps * (kc * D + i), KT - 1);
      const int64_t gbase = int64_t(kt / tpg) * a.N + n0 + g;  // outputs n0 + 16 np + 8 h + g
#pragma unroll
      for (int np = 0; np < 2; ++np)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t idx = gbase + 16 * np + 8 * h;
          sc[i][np][h] = to_float<ScaleT>(__ldg(reinterpret_cast<const ScaleT*>(a.scales) + idx));
          if constexpr (ASYM) zq[i][np][h] = __ldg(a.zeros + idx);
        }
    }
#pragma unroll
    for (int i = 0; i < D; ++i) {
      const int kt = warp + kFewWarps * (kc * D + i);
      if (kt >= KT) break;
      uint32_t bx[2][2];  // B fragments of K halves ks = 0, 1
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) {
        const int k0 = kt * kTileK + ks * 16;
        bx[ks][0] = x_row ? *reinterpret_cast<const uint32_t*>(xrow + k0) : 0u;
        bx[ks][1] = x_row ? *reinterpret_cast<const uint32_t*>(xrow + k0 + 8) : 0u;
      }
      const uint32_t q[4] = {cur[i].x, cur[i].y, cur[i].z, cur[i].w};
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        H2 off[2] = {off_sym, off_sym};
        if constexpr (ASYM)
#pragma unroll
          for (int h = 0; h < 2; ++h) off[h] = splat<T>(Dequant<T>::kMagic + float(zq[i][np][h]));
        float part[4];
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {
          uint32_t b[4];
          Dequant<T>::run(q[ks * 2 + np], off[0], off[1], b);
          const uint32_t af[4] = {b[0], b[2], b[1], b[3]};  // rows g, g + 8 x K 2t, 2t + 8
          if (ks == 0)
            mma_16816_zero<T>(part, af, bx[ks][0], bx[ks][1]);
          else
            mma_16816<T>(part, af, bx[ks][0], bx[ks][1]);
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[np][e] = fmaf(part[e], sc[i][np][e >> 1], acc[np][e]);
      }
    }
    if (kc + 1 == cps) {  // the strip's last chunk: add the warps' sums, write y
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        red[parity][warp][j * 32 + lane] = acc[j / 4][j % 4];
        acc[j / 4][j % 4] = 0.f;
      }
      __syncthreads();
      const int j = tid / 32, l = tid % 32;  // kFewWarps * 32 == 8 accumulators x 32 lanes
      const int m = 2 * (l % 4) + (j & 1);
      if (m < M) {
        const int64_t n = n0 + 16 * (j / 4) + 8 * ((j % 4) >> 1) + l / 4;
        float v = 0.f;
#pragma unroll
        for (int w = 0; w < kFewWarps; ++w) v += red[parity][w][tid];
        if (a.bias) v += to_float<T>(reinterpret_cast<const T*>(a.bias)[n]);
        reinterpret_cast<T*>(a.y)[int64_t(m) * a.N + n] = from_float<T>(v);
      }
      parity ^= 1;
    }
  }
}

// Dynamic shared memory the kernel may use on the current device: kFewMaxSmem
// on Hopper, less where a block can opt in to less (A100 163 KiB, sm_86/89
// 99 KiB), so those GPUs take the other path for long K instead of failing.
size_t few_smem_limit() {
  DeviceInfo dev;
  if (current_device_info(dev) != cudaSuccess) return 0;
  const int64_t room = int64_t(dev.smem_optin) - int64_t(kFewStaticSmem);
  return size_t(room < 0 ? 0 : room < int64_t(kFewMaxSmem) ? room : int64_t(kFewMaxSmem));
}

// Rows of x that fit in shared memory (up to 8: one n8 block of B).
bool few_ok(const QGemmTcArgs& a) {
  return a.M >= 1 && a.M <= kFewMaxM && few_smem(a.M, a.K) <= few_smem_limit();
}

template <typename T, typename ScaleT, int D, bool ASYM>
cudaError_t launch_few_d(const QGemmTcArgs& a, cudaStream_t stream) {
  const auto kernel = qgemm_w4_few_kernel<T, ScaleT, D, ASYM>;
  const int smem = int(few_smem(a.M, a.K));
  DeviceInfo dev;
  cudaError_t e = current_device_info(dev);
  if (e != cudaSuccess) return e;
  // CTAs per SM for the last (device, shared-memory size) asked, packed as
  // device << 40 | smem << 8 | CTAs; 0 = none yet. The opt-in covers every
  // size few_ok accepts.
  static std::atomic<int64_t> cached{0};
  int device = 0;
  if ((e = cudaGetDevice(&device)) != cudaSuccess) return e;
  const int64_t key = int64_t(device) << 40 | int64_t(smem) << 8;
  int64_t c = cached.load(std::memory_order_relaxed);
  if (c == 0 || (c & ~int64_t(0xff)) != key) {
    int per_sm = 0;
    if ((e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(few_smem_limit()))) !=
        cudaSuccess)
      return e;
    if ((e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 32 * kFewWarps, smem)) != cudaSuccess)
      return e;
    c = key | (per_sm > 0 ? (per_sm < 255 ? per_sm : 255) : 1);
    cached.store(c, std::memory_order_relaxed);
  }
  const int per_sm = int(c & 0xff);
  const int64_t strips = a.N / kStripN, wave = int64_t(dev.sms) * per_sm;
  return launch_early(kernel, unsigned(strips < wave ? strips : wave), 32 * kFewWarps, size_t(smem), stream, dev, a);
}

// 8 K tiles a chunk: 128 bytes in flight per lane at 128 registers, 2 CTAs
// per SM (12 measured slower; 4 slower still; refilling each slot as it is
// used, with the scales shared by shuffles, slower too).
template <typename T, typename ScaleT>
cudaError_t launch_few_t(const QGemmTcArgs& a, cudaStream_t stream) {
  return a.zeros ? launch_few_d<T, ScaleT, 8, true>(a, stream) : launch_few_d<T, ScaleT, 8, false>(a, stream);
}

template <typename T>
cudaError_t launch_few_s(const QGemmTcArgs& a, cudaStream_t stream) {
  switch (a.scale) {
    case GpuFloat::kF16: return launch_few_t<T, __half>(a, stream);
    case GpuFloat::kBF16: return launch_few_t<T, __nv_bfloat16>(a, stream);
    default: return launch_few_t<T, float>(a, stream);
  }
}

cudaError_t launch_few(const QGemmTcArgs& a, cudaStream_t stream) {
  return a.act == GpuFloat::kBF16 ? launch_few_s<__nv_bfloat16>(a, stream) : launch_few_s<__half>(a, stream);
}

}  // namespace

bool qgemm_few_ok(const QGemmTcArgs& a) { return qgemm_tc_supported(a.N, a.K, a.group_size) && few_ok(a); }

int qgemm_few_cuda(const QGemmTcArgs& a, void* stream) {
  if (!qgemm_few_ok(a) || (a.act != GpuFloat::kF16 && a.act != GpuFloat::kBF16)) return int(cudaErrorInvalidValue);
  return int(launch_few(a, static_cast<cudaStream_t>(stream)));
}

}  // namespace quantcore::kernels
