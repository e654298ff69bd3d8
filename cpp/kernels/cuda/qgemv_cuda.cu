// Weight-only GEMV. One CTA computes kRows output features; its warps split K
// in steps (a step is 32 lanes x one 16-byte weight load per row), each lane
// keeping its slice of x in registers and walking the CTA's rows, so weights
// stream from HBM with kRows independent 16-byte loads in flight per lane.
// Decode (one row of x, and 2-4 rows at 4 bits) has its own kernel: a
// persistent grid of CTAs sweeping row tiles, with the next tile's loads in
// flight (below).
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

#include <atomic>
#include <cstdlib>

#include "float_types.cuh"
#include "qgemv_cuda.h"
#include "weight_stream.cuh"

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

// (q - z) . x over one lane-chunk (32 codes): two chains of 8 products per
// half keep fp16's rounding small.
__device__ __forceinline__ float dot32_w4(const uint4& w, const __half2 (&xp)[4][4], __half2 lo_off, __half2 hi_off) {
  __half2 even = __float2half2_rn(0.f), odd = even;
  even = dot8_w4(w.x, xp[0], lo_off, hi_off, even);
  odd = dot8_w4(w.y, xp[1], lo_off, hi_off, odd);
  even = dot8_w4(w.z, xp[2], lo_off, hi_off, even);
  odd = dot8_w4(w.w, xp[3], lo_off, hi_off, odd);
  const float2 fe = __half22float2(even), fo = __half22float2(odd);
  return (fe.x + fe.y) + (fo.x + fo.y);
}

// The 16 codes of an 8-bit lane-chunk minus the zero point, in fp32: 2^23 +
// byte (byte_perm into the mantissa of 2^23), then minus 2^23 + z: exact.
__device__ __forceinline__ void w8_minus_zero(const uint4& w, float z, float (&c)[16]) {
  const float base = 8388608.f + z;
  const uint32_t q[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int b = 0; b < 4; ++b) c[4 * i + b] = __uint_as_float(__byte_perm(q[i], 0x4B000000u, 0x7440 + b)) - base;
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
#pragma unroll
        for (int m = 0; m < MT; ++m)
          acc[r][m] = fmaf(dot32_w4(wq[u][r], xp[m], lo_off, hi_off), s * unscale[m], acc[r][m]);
      }
    }
  }
  finish<T, MT, kRowsW4, WARPS>(acc, a, m0, row0);
}

// ---- M = 1 (4- and 8-bit) and 2-4 rows of x (4-bit) ----
// On the smaller decode shapes the classic kernels above run about two waves
// of short CTAs (255 registers: 2 CTAs, 8 warps per SM; 8192 x 8192 is 512
// CTAs), so much of their time is ramp-up, lock-step load bursts and tail. This
// one keeps every SM streaming: a persistent grid (one wave) of CTAs walks
// tiles of ROWS consecutive rows (each tile one contiguous block of codes).
// The CTA's T = blockDim.x lanes split K, lane t taking lane-chunks t, t + T,
// ... (J of them, T sized to K), so x is read into registers once per CTA
// for all its tiles; the codes and scales of the CTA's next tile are
// requested before the current tile's math and CTA-wide reduction. Per
// lane-chunk the arithmetic is the classic kernels' (dot32_w4 /
// w8_minus_zero), so results match them up to summation order.
//
// The first tile's codes and scales are requested before the wait for the
// previous kernel (programmatic dependent launch), so they stream in while
// it drains; x and y stay behind the wait (why that is safe:
// wait_for_previous_grid in weight_stream.cuh).

// Group of a lane-chunk: a shift for power-of-two groups, else a division.
struct GroupOf {
  int div, shift;
  __device__ __forceinline__ explicit GroupOf(int chunks_per_group) : div(chunks_per_group), shift(-1) {
    if ((chunks_per_group & (chunks_per_group - 1)) == 0) shift = __ffs(chunks_per_group) - 1;
  }
  __device__ __forceinline__ int operator()(int chunk) const { return shift >= 0 ? chunk >> shift : chunk / div; }
};

// Sums R per-lane values over the warp with R - 1 + 5 - log2(R) shuffles
// instead of 5 R: each step hands half of the values to the partner lane.
// Lane l ends up with the total of value l / (32 / R).
template <int R>
__device__ __forceinline__ float warp_reduce_many(float (&v)[R], int lane) {
  static_assert(R >= 1 && R <= 32 && (R & (R - 1)) == 0, "R: a power of two up to 32");
  int n = R;
#pragma unroll
  for (int mask = kWarp / 2; mask >= 1; mask /= 2) {
    if (n > 1) {
      const bool upper = lane & mask;
#pragma unroll
      for (int i = 0; i < R / 2; ++i)
        if (i < n / 2) {
          const float send = upper ? v[i] : v[i + n / 2], keep = upper ? v[i + n / 2] : v[i];
          v[i] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
        }
      n /= 2;
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], mask);
    }
  }
  return v[0];
}

constexpr int kM1MaxWarps = 16;  // T <= 512 lanes; with J = 2, K up to 32768 (4-bit) / 16384 (8-bit)

// The 16 (q - z) fp16 pairs of one lane-chunk, for several rows of x (the
// operands dot32_w4 forms, so sums match it exactly).
__device__ __forceinline__ void dequant32_w4(const uint4& w, __half2 lo_off, __half2 hi_off, __half2 (&d)[4][4]) {
  const __half2 sixteenth = __float2half2_rn(1.f / 16.f);
  const uint32_t q[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t q8 = q[i] >> 8;
    d[i][0] = __hsub2(as_half2(lop3_and_or(q[i], 0x000f000fu, 0x64006400u)), lo_off);
    d[i][1] = __hfma2(as_half2(lop3_and_or(q[i], 0x00f000f0u, 0x64006400u)), sixteenth, hi_off);
    d[i][2] = __hsub2(as_half2(lop3_and_or(q8, 0x000f000fu, 0x64006400u)), lo_off);
    d[i][3] = __hfma2(as_half2(lop3_and_or(q8, 0x00f000f0u, 0x64006400u)), sixteenth, hi_off);
  }
}
__device__ __forceinline__ float dot32_dequantized(const __half2 (&d)[4][4], const __half2 (&xp)[4][4]) {
  __half2 even = __float2half2_rn(0.f), odd = even;
#pragma unroll
  for (int i = 0; i < 4; i += 2)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      even = __hfma2(d[i][e], xp[i][e], even);
      odd = __hfma2(d[i + 1][e], xp[i + 1][e], odd);
    }
  const float2 fe = __half22float2(even), fo = __half22float2(odd);
  return (fe.x + fe.y) + (fo.x + fo.y);
}

// A lane-chunk: one 16-byte load of a row's codes and the slice of x it
// multiplies, kept in registers. dot() returns (q - z) . x for one row,
// before the group scale.
template <int BITS>
struct LaneChunk;

template <>
struct LaneChunk<4> {
  static constexpr int kCodes = 32;
  static constexpr float kSymZero = 8.f;
  struct X {
    __half2 xp[4][4];  // scaled by a power of two (load_x_chunk)
    float unscale;
  };
  template <typename T>
  __device__ __forceinline__ static void load_x(const T* src, X& x) {
    x.unscale = load_x_chunk<T>(src, x.xp);
  }
  __device__ __forceinline__ static float dot(const uint4& w, const X& x, float z) {
    const __half2 lo_off = __float2half2_rn(1024.f + z), hi_off = __float2half2_rn(-64.f - z);
    return dot32_w4(w, x.xp, lo_off, hi_off) * x.unscale;  // a power of two: exact
  }
  __device__ __forceinline__ static void zero_x(X& x) { x.unscale = 0.f; }
};

template <>
struct LaneChunk<8> {
  static constexpr int kCodes = 16;
  static constexpr float kSymZero = 128.f;
  struct X {
    float v[16];
  };
  template <typename T>
  __device__ __forceinline__ static void load_x(const T* src, X& x) {
    const uint4 raw[2] = {__ldg(reinterpret_cast<const uint4*>(src)), __ldg(reinterpret_cast<const uint4*>(src) + 1)};
    const T* t = reinterpret_cast<const T*>(raw);
#pragma unroll
    for (int i = 0; i < 16; ++i) x.v[i] = to_float<T>(t[i]);
  }
  __device__ __forceinline__ static void zero_x(X& x) {
#pragma unroll
    for (int i = 0; i < 16; ++i) x.v[i] = 0.f;
  }
  __device__ __forceinline__ static float dot(const uint4& w, const X& x, float z) {
    float c[16], d = 0.f;
    w8_minus_zero(w, z, c);
#pragma unroll
    for (int i = 0; i < 16; ++i) d = fmaf(c[i], x.v[i], d);
    return d;
  }
};

// ROWS x J 16-byte loads per lane per tile: 4 measured best on the H100
// (8: more registers, fewer CTAs per SM; likewise loading 2 tiles ahead).
// MT > 1 (4-bit) serves MT rows of x in one pass over the weights (J = 1):
// each lane-chunk is dequantized once and multiplied by every row's x, which
// stays in registers (16 per row per lane-chunk).
template <typename T, typename ScaleT, int BITS, int ROWS, int J, int MT, bool ASYM>
__global__ void __launch_bounds__(kWarp* kM1MaxWarps) qgemv_m1_kernel(QGemvArgs a) {
  static_assert(MT == 1 || (J == 1 && BITS == 4), "several rows of x: 4-bit, one lane-chunk per lane");
  using C = LaneChunk<BITS>;
  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp, nthreads = blockDim.x;
  const int chunks = int(a.K / C::kCodes);
  const int64_t words4 = a.K / C::kCodes, groups = a.K / a.group_size;
  const int64_t tiles = (a.N + ROWS - 1) / ROWS;
  const GroupOf group_of(int(a.group_size / C::kCodes));
  bool live[J];  // lane-chunk j exists (the last warp may have idle lanes)
  int gj[J];
#pragma unroll
  for (int j = 0; j < J; ++j) {
    live[j] = tid + j * nthreads < chunks;
    gj[j] = group_of(live[j] ? tid + j * nthreads : 0);
  }
  // Codes, scales and zeros of tile lt, the CTA's next tile.
  uint4 wq[ROWS][J];
  ScaleT sq[ROWS][J];
  uint8_t zq[ROWS][J];
  int64_t lt = blockIdx.x;
  // Row r of tile lt.
  auto load_row = [&](int r) {
    const int64_t row0 = (lt < tiles ? lt : 0) * ROWS;  // past the last tile: nothing is loaded
    const uint4* wp = reinterpret_cast<const uint4*>(a.qweight) + row0 * words4 + tid;
    const ScaleT* sp = reinterpret_cast<const ScaleT*>(a.scales) + row0 * groups;
    const bool row_ok = lt < tiles && row0 + r < a.N;  // rows past N are summed as zeros, never written
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const bool ok = row_ok && live[j];
      wq[r][j] = ok ? load_codes_nc(wp + r * words4 + j * nthreads) : make_uint4(0, 0, 0, 0);
      sq[r][j] = ok ? __ldg(sp + r * groups + gj[j]) : ScaleT(0.f);
      if constexpr (ASYM) zq[r][j] = ok ? __ldg(a.zeros + (row0 + r) * groups + gj[j]) : uint8_t(0);
    }
  };
  auto load_next = [&]() {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) load_row(r);
    lt += gridDim.x;
  };
  int64_t tile = lt;
  load_next();  // the first tile's weights: before the wait (see above)
  wait_for_previous_grid();
  typename C::X xs[MT][J];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    const int64_t mm = m < a.M ? m : a.M - 1;  // rows past M repeat the last one, never written
#pragma unroll
    for (int j = 0; j < J; ++j) {
      // A lane-chunk past K is never used; zeroing it anyway keeps the
      // registers the 4-bit kernels were tuned with (3 more without, at 2 rows of x).
      if (live[j])
        C::template load_x<T>(reinterpret_cast<const T*>(a.x) + mm * a.K + int64_t(tid + j * nthreads) * C::kCodes,
                              xs[m][j]);
      else
        C::zero_x(xs[m][j]);
    }
  }
  allow_next_grid();
  // Per-warp partial sums, double-buffered so one barrier per tile suffices.
  constexpr int R = ROWS * MT;  // sums per tile, row-major (row r, x row m at r * MT + m)
  __shared__ float part[2][kM1MaxWarps][R];
  for (int parity = 0; tile < tiles; tile += gridDim.x, parity ^= 1) {
    float acc[R];
    if constexpr (MT == 1) {
      uint4 cw[ROWS][J];
      ScaleT cs[ROWS][J];
      uint8_t cz[ROWS][J];
#pragma unroll
      for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int j = 0; j < J; ++j) {
          cw[r][j] = wq[r][j];
          cs[r][j] = sq[r][j];
          if constexpr (ASYM) cz[r][j] = zq[r][j];
        }
      load_next();
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        acc[r] = 0.f;
#pragma unroll
        for (int j = 0; j < J; ++j)
          if (live[j])
            acc[r] = fmaf(C::dot(cw[r][j], xs[0][j], ASYM ? float(cz[r][j]) : C::kSymZero),
                          to_float<ScaleT>(cs[r][j]), acc[r]);
      }
    } else {
      // Row by row: dequantize the row's lane-chunk, then ask for the same row
      // of the next tile into the registers just freed (a tile of codes in
      // registers instead of two).
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        const float z = ASYM ? float(zq[r][0]) : 8.f;
        const __half2 lo_off = __float2half2_rn(1024.f + z), hi_off = __float2half2_rn(-64.f - z);
        const float s = to_float<ScaleT>(sq[r][0]);
        __half2 d[4][4];
        dequant32_w4(wq[r][0], lo_off, hi_off, d);
        load_row(r);
#pragma unroll
        for (int m = 0; m < MT; ++m)
          acc[r * MT + m] = live[0] ? dot32_dequantized(d, xs[m][0].xp) * (s * xs[m][0].unscale) : 0.f;
      }
      lt += gridDim.x;
    }
    const float v = warp_reduce_many<R>(acc, lane);
    constexpr int kLanesPerSum = kWarp / R;
    if (lane % kLanesPerSum == 0) part[parity][warp][lane / kLanesPerSum] = v;
    __syncthreads();
    if (tid < R) {
      const int64_t row = tile * ROWS + tid / MT, m = tid % MT;
      if (row < a.N && m < a.M) {
        float o = 0.f;
        for (int w = 0; w < nthreads / kWarp; ++w) o += part[parity][w][tid];
        if (a.bias) o += to_float<T>(reinterpret_cast<const T*>(a.bias)[row]);
        reinterpret_cast<T*>(a.y)[m * a.N + row] = from_float<T>(o);
      }
    }
  }
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
      float c[16];
      w8_minus_zero(wq[r], a.zeros ? float(__ldg(a.zeros + row * groups + g)) : 128.f, c);
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

// One wave of the M = 1 kernel (CTAs resident at once, at most one per tile),
// launched with programmatic stream serialization on Hopper and later.
template <typename T, typename ScaleT, int BITS, int ROWS, int J, int MT, bool ASYM>
cudaError_t launch_m1(const QGemvArgs& a, int warps, cudaStream_t stream) {
  const auto kernel = qgemv_m1_kernel<T, ScaleT, BITS, ROWS, J, MT, ASYM>;
  DeviceInfo dev;
  cudaError_t e = current_device_info(dev);
  if (e != cudaSuccess) return e;
  static std::atomic<int> occupancy[kM1MaxWarps + 1];  // CTAs per SM by warps per CTA; 0 = not yet known
  int per_sm = occupancy[warps].load(std::memory_order_relaxed);
  if (per_sm == 0) {
    if ((e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarp * warps, 0)) != cudaSuccess) return e;
    per_sm = per_sm > 0 ? per_sm : 1;
    occupancy[warps].store(per_sm, std::memory_order_relaxed);
  }
  const int64_t tiles = (a.N + ROWS - 1) / ROWS, wave = int64_t(dev.sms) * per_sm;
  return launch_early(kernel, unsigned(tiles < wave ? tiles : wave), unsigned(kWarp * warps), 0, stream, dev, a);
}

// Sizes the M = 1 kernel's CTA to K: one lane-chunk per lane (J = 1, tiles of
// 4 rows) up to 8 warps (4-bit K <= 8192, 8-bit K <= 4096), else two (J = 2,
// tiles of 2 rows, so still 4 loads per lane per tile) up to 16 warps (4-bit
// K <= 32768, 8-bit K <= 16384): on the H100 7 warps of J = 2 beat 14 warps of
// J = 1 at 4-bit K = 14336 (more CTAs fit per SM), and J = 1 won at 4-bit
// K = 4096 and 8192. Returns false for longer K.
template <typename T, typename ScaleT, int BITS>
bool try_launch_m1(const QGemvArgs& a, cudaStream_t stream, cudaError_t& e) {
  const int64_t chunks = a.K / LaneChunk<BITS>::kCodes;
  const bool asym = a.zeros != nullptr;
  if (chunks <= kWarp * 8) {
    const int warps = int((chunks + kWarp - 1) / kWarp);
    e = asym ? launch_m1<T, ScaleT, BITS, 4, 1, 1, true>(a, warps, stream)
             : launch_m1<T, ScaleT, BITS, 4, 1, 1, false>(a, warps, stream);
    return true;
  }
  if (chunks <= 2 * kWarp * kM1MaxWarps) {
    const int warps = int((chunks + 2 * kWarp - 1) / (2 * kWarp));
    e = asym ? launch_m1<T, ScaleT, BITS, 2, 2, 1, true>(a, warps, stream)
             : launch_m1<T, ScaleT, BITS, 2, 2, 1, false>(a, warps, stream);
    return true;
  }
  return false;
}

// 2 to 4 rows of x (4-bit): the same kernel with one lane-chunk per lane (K <=
// 16384), all rows in one pass over the weights; x takes 16 registers per
// row, so 4 rows go with tiles of 2 rows (tiles of 4 spill at 128 registers
// and measured slower; tiles of 8 for 2 rows gained nothing).
template <typename T, typename ScaleT>
bool try_launch_w4_rows(const QGemvArgs& a, cudaStream_t stream, cudaError_t& e) {
  const int64_t chunks = a.K / 32;
  if (a.M < 2 || a.M > 4 || chunks > kWarp * kM1MaxWarps) return false;
  const int warps = int((chunks + kWarp - 1) / kWarp);
  const bool asym = a.zeros != nullptr;
  if (a.M == 2)
    e = asym ? launch_m1<T, ScaleT, 4, 4, 1, 2, true>(a, warps, stream)
             : launch_m1<T, ScaleT, 4, 4, 1, 2, false>(a, warps, stream);
  else
    e = asym ? launch_m1<T, ScaleT, 4, 2, 1, 4, true>(a, warps, stream)
             : launch_m1<T, ScaleT, 4, 2, 1, 4, false>(a, warps, stream);
  return true;
}

// Whether one row of x at 8 bits takes the persistent kernel above (else the
// classic one). QUANTCORE_W8_M1=1 / 0 forces it on / off (read once).
constexpr bool kW8DecodeKernelByDefault = false;  // until it has run on a GPU
bool w8_decode_kernel() {
  static const bool on = [] {
    const char* v = std::getenv("QUANTCORE_W8_M1");
    return v == nullptr || v[0] == '\0' ? kW8DecodeKernelByDefault : v[0] == '1';
  }();
  return on;
}

template <typename T, typename ScaleT>
cudaError_t launch_rows(const QGemvArgs& a, cudaStream_t stream) {
  cudaError_t e = cudaSuccess;
  if (a.M == 1 && (a.bits == 4 ? try_launch_m1<T, ScaleT, 4>(a, stream, e)
                               : w8_decode_kernel() && try_launch_m1<T, ScaleT, 8>(a, stream, e)))
    return e;
  if (a.bits == 4 && try_launch_w4_rows<T, ScaleT>(a, stream, e)) return e;
  for (int64_t m0 = 0; m0 < a.M; m0 += kQGemvMaxM) {
    const int64_t rows = a.M - m0 < kQGemvMaxM ? a.M - m0 : kQGemvMaxM;
    e = rows == 1 ? launch<T, ScaleT, 1>(a, m0, stream)
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
