// Weight-only GEMV. One CTA computes kRows output features; its warps split K
// in steps (a step is 32 lanes x one 16-byte weight load per row), each lane
// keeping its slice of x in registers and walking the CTA's rows, so weights
// stream from HBM with kRows independent 16-byte loads in flight per lane.
//
// 4-bit codes become fp16 pairs with the magic-number trick: OR-ing a nibble
// into the mantissa of 1024 (fp16 0x6400) gives 1024 + q exactly, and
// subtracting 1024 + z leaves q - z exactly. Activations (fp16 or bf16) enter
// the fp16 arithmetic scaled by a power of two per 32 values, so no product
// sum overflows; chains of 8 products are summed in fp32 and scaled per group.
// 8-bit codes go through fp32 directly (2^23 + q, exact).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "float_types.cuh"
#include "qgemv_cuda.h"

namespace quantcore::kernels {

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerCta = 4;
constexpr int kRows = 8;     // rows per CTA (8-bit)
constexpr int kRowsW4 = 16;  // 4-bit: more rows share each load of x

__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t mask, uint32_t magic) {
  uint32_t r;
  // (a & mask) | magic in one instruction.
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(a), "r"(mask), "r"(magic));
  return r;
}

__device__ __forceinline__ __half2 as_half2(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

// Sum over the 8 codes of one word of (q - z) * x in fp16, x given as the
// pairs (x0,x4) (x1,x5) (x2,x6) (x3,x7) that the nibble masks produce. One
// shift per word: the low nibble of each byte gives 1024 + q (minus 1024 + z
// leaves q - z), the high one 1024 + 16 q (times 1/16 minus 64 + z: the same).
__device__ __forceinline__ __half2 dot8_w4(uint32_t q, const __half2 xp[4], __half2 lo_off, __half2 hi_off,
                                           __half2 acc) {
  const __half2 sixteenth = __float2half2_rn(1.f / 16.f);
  const uint32_t q8 = q >> 8;
  acc = __hfma2(__hsub2(as_half2(lop3_and_or(q, 0x000f000fu, 0x64006400u)), lo_off), xp[0], acc);
  acc = __hfma2(__hfma2(as_half2(lop3_and_or(q, 0x00f000f0u, 0x64006400u)), sixteenth, hi_off), xp[1], acc);
  acc = __hfma2(__hsub2(as_half2(lop3_and_or(q8, 0x000f000fu, 0x64006400u)), lo_off), xp[2], acc);
  acc = __hfma2(__hfma2(as_half2(lop3_and_or(q8, 0x00f000f0u, 0x64006400u)), sixteenth, hi_off), xp[3], acc);
  return acc;
}

// A lane's 32 activations as fp16 pairs in nibble order, scaled by a power of
// two so the largest is in [128, 256): 16 products of codes (|q - z| <= 15)
// then stay below fp16's 65504, and bf16 inputs convert without overflow.
// Returns the factor to multiply the dot product by.
template <typename T>
__device__ __forceinline__ float load_x_chunk(const T* src, __half2 (&xp)[4][4]) {
  float v[32];
  const uint4* s4 = reinterpret_cast<const uint4*>(src);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint4 raw = __ldg(s4 + i);
    const T* t = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[8 * i + j] = to_float<T>(t[j]);
  }
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < 32; ++i) amax = fmaxf(amax, fabsf(v[i]));
  // 2^(7 - floor(log2 amax)) from the exponent bits; 1 for an all-zero chunk.
  const int e = amax > 0.f ? int((__float_as_uint(amax) >> 23) & 0xff) - 127 : 7;
  const float scale = __uint_as_float(uint32_t(127 + 7 - max(min(e, 120), -120)) << 23);
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)  // (x[j], x[j + 4]) of word i
      xp[i][j] = __floats2half2_rn(v[8 * i + j] * scale, v[8 * i + j + 4] * scale);
  return 1.f / scale;
}

template <typename ScaleT>
__device__ __forceinline__ float load_scale(const void* scales, int64_t idx) {
  return to_float<ScaleT>(__ldg(reinterpret_cast<const ScaleT*>(scales) + idx));
}

// Writes the CTA's results: lane sums reduced over the warp, then over warps.
template <typename T, int MT, int ROWS, int WARPS = kWarpsPerCta>
__device__ __forceinline__ void finish(float (&acc)[ROWS][MT], const QGemvArgs& a, int64_t m0, int64_t row0) {
  __shared__ float part[WARPS][ROWS][MT];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) part[warp][r][m] = v;
    }
  __syncthreads();
  const int t = threadIdx.x;
  if (t < ROWS * MT) {
    const int r = t / MT, m = t % MT;
    const int64_t row = row0 + r;
    if (row < a.N && m0 + m < a.M) {
      float v = 0.f;
#pragma unroll
      for (int w = 0; w < WARPS; ++w) v += part[w][r][m];
      if (a.bias) v += to_float<T>(reinterpret_cast<const T*>(a.bias)[row]);
      reinterpret_cast<T*>(a.y)[(m0 + m) * a.N + row] = from_float<T>(v);
    }
  }
}

// 4-bit: a lane-chunk is 32 codes (one uint4 of weights) per row; kRowsW4
// independent 16-byte weight loads are in flight per lane before any math,
// and each 64-byte load of x serves kRowsW4 rows. (8 warps per CTA instead of
// 4 measured slower on the H100's smaller shapes.)
template <typename T, typename ScaleT, int MT, int WARPS>
__global__ void __launch_bounds__(kWarp* WARPS) qgemv_w4_kernel(QGemvArgs a, int64_t m0) {
  constexpr int kUnroll = 1;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t row0 = int64_t(blockIdx.x) * kRowsW4;
  const int64_t chunks = a.K / 32, words = a.K / 8, groups = a.K / a.group_size;
  const int chunks_per_group = int(a.group_size / 32);
  constexpr int64_t kStride = int64_t(WARPS) * kWarp;
  const T* x = reinterpret_cast<const T*>(a.x);
  float acc[kRowsW4][MT] = {};
  for (int64_t base = int64_t(warp) * kWarp + lane; base < chunks; base += kUnroll * kStride) {
    uint4 wq[kUnroll][kRowsW4];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t chunk = base + u * kStride;
#pragma unroll
      for (int r = 0; r < kRowsW4; ++r) {
        const int64_t row = row0 + r < a.N ? row0 + r : a.N - 1;  // clamped rows are computed, never written
        wq[u][r] = chunk < chunks ? __ldg(reinterpret_cast<const uint4*>(a.qweight + row * words) + chunk)
                                  : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t chunk = base + u * kStride;
      if (chunk >= chunks) break;
      __half2 xp[MT][4][4];
      float unscale[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const int64_t mm = m0 + m < a.M ? m0 + m : m0;  // padded rows repeat row m0, never written
        unscale[m] = load_x_chunk<T>(x + mm * a.K + chunk * 32, xp[m]);
      }
      const int64_t g = chunk / chunks_per_group;
#pragma unroll
      for (int r = 0; r < kRowsW4; ++r) {
        const int64_t row = row0 + r < a.N ? row0 + r : a.N - 1;
        const float s = load_scale<ScaleT>(a.scales, row * groups + g);
        const float z = a.zeros ? float(__ldg(a.zeros + row * groups + g)) : 8.f;
        const __half2 lo_off = __float2half2_rn(1024.f + z), hi_off = __float2half2_rn(-64.f - z);
        const uint32_t q[4] = {wq[u][r].x, wq[u][r].y, wq[u][r].z, wq[u][r].w};
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          // Two chains of 8 products per half keep fp16's rounding small.
          __half2 even = __float2half2_rn(0.f), odd = even;
          even = dot8_w4(q[0], xp[m][0], lo_off, hi_off, even);
          odd = dot8_w4(q[1], xp[m][1], lo_off, hi_off, odd);
          even = dot8_w4(q[2], xp[m][2], lo_off, hi_off, even);
          odd = dot8_w4(q[3], xp[m][3], lo_off, hi_off, odd);
          const float2 fe = __half22float2(even), fo = __half22float2(odd);
          acc[r][m] = fmaf((fe.x + fe.y) + (fo.x + fo.y), s * unscale[m], acc[r][m]);
        }
      }
    }
  }
  finish<T, MT, kRowsW4, WARPS>(acc, a, m0, row0);
}

// 8-bit: a lane-chunk is 16 codes (one uint4) per row, in fp32 throughout.
template <typename T, typename ScaleT, int MT>
__global__ void __launch_bounds__(kWarp* kWarpsPerCta) qgemv_w8_kernel(QGemvArgs a, int64_t m0) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t row0 = int64_t(blockIdx.x) * kRows;
  const int64_t chunks = a.K / 16, words = a.K / 4, groups = a.K / a.group_size;
  const int chunks_per_group = int(a.group_size / 16);
  const T* x = reinterpret_cast<const T*>(a.x);
  float acc[kRows][MT] = {};
  for (int64_t chunk = int64_t(warp) * kWarp + lane; chunk < chunks; chunk += kWarpsPerCta * kWarp) {
    float xf[MT][16];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m0 + m < a.M) {
        const T* src = x + (m0 + m) * a.K + chunk * 16;
        uint4 raw[2] = {__ldg(reinterpret_cast<const uint4*>(src)), __ldg(reinterpret_cast<const uint4*>(src) + 1)};
        const T* v = reinterpret_cast<const T*>(raw);
#pragma unroll
        for (int i = 0; i < 16; ++i) xf[m][i] = to_float<T>(v[i]);
      } else {
#pragma unroll
        for (int i = 0; i < 16; ++i) xf[m][i] = 0.f;
      }
    }
    uint4 wq[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + r < a.N ? row0 + r : a.N - 1;
      wq[r] = __ldg(reinterpret_cast<const uint4*>(a.qweight + row * words) + chunk);
    }
    const int64_t g = chunk / chunks_per_group;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + r < a.N ? row0 + r : a.N - 1;
      const float s = load_scale<ScaleT>(a.scales, row * groups + g);
      const float base = 8388608.f + (a.zeros ? float(__ldg(a.zeros + row * groups + g)) : 128.f);
      const uint32_t q[4] = {wq[r].x, wq[r].y, wq[r].z, wq[r].w};
      float c[16];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int b = 0; b < 4; ++b)  // 2^23 + byte, then minus 2^23 + z: exact
          c[4 * i + b] = __uint_as_float(__byte_perm(q[i], 0x4B000000u, 0x7440 + b)) - base;
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < 16; ++i) d = fmaf(c[i], xf[m][i], d);
        acc[r][m] = fmaf(d, s, acc[r][m]);
      }
    }
  }
  finish<T, MT, kRows>(acc, a, m0, row0);
}

template <typename T, typename ScaleT, int MT>
cudaError_t launch(const QGemvArgs& a, int64_t m0, cudaStream_t stream) {
  const dim3 block(kWarp * kWarpsPerCta);
  if (a.bits == 4)
    qgemv_w4_kernel<T, ScaleT, MT, kWarpsPerCta><<<unsigned((a.N + kRowsW4 - 1) / kRowsW4), block, 0, stream>>>(
        a, m0);
  else
    qgemv_w8_kernel<T, ScaleT, MT><<<unsigned((a.N + kRows - 1) / kRows), block, 0, stream>>>(a, m0);
  return cudaGetLastError();
}

template <typename T, typename ScaleT>
cudaError_t launch_rows(const QGemvArgs& a, cudaStream_t stream) {
  for (int64_t m0 = 0; m0 < a.M; m0 += kQGemvMaxM) {
    const int64_t rows = a.M - m0 < kQGemvMaxM ? a.M - m0 : kQGemvMaxM;
    cudaError_t e = rows == 1 ? launch<T, ScaleT, 1>(a, m0, stream)
                  : rows == 2 ? launch<T, ScaleT, 2>(a, m0, stream)
                              : launch<T, ScaleT, 4>(a, m0, stream);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

template <typename T>
cudaError_t dispatch_scale(const QGemvArgs& a, cudaStream_t stream) {
  switch (a.scale) {
    case GpuFloat::kF16: return launch_rows<T, __half>(a, stream);
    case GpuFloat::kBF16: return launch_rows<T, __nv_bfloat16>(a, stream);
    default: return launch_rows<T, float>(a, stream);
  }
}

}  // namespace

bool qgemv_supported(int bits, int64_t K, int64_t group_size) {
  const int64_t chunk = bits == 4 ? 32 : 16;
  return (bits == 4 || bits == 8) && K % 32 == 0 && group_size > 0 && K % group_size == 0 &&
         group_size % chunk == 0;
}

int qgemv_cuda(const QGemvArgs& a, void* stream) {
  if (!qgemv_supported(a.bits, a.K, a.group_size)) return int(cudaErrorInvalidValue);
  if (a.M == 0 || a.N == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const cudaError_t e = a.act == GpuFloat::kBF16 ? dispatch_scale<__nv_bfloat16>(a, s) : dispatch_scale<__half>(a, s);
  return int(e);
}

}  // namespace quantcore::kernels
