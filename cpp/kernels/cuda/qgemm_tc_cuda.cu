// W4A16 tensor-core GEMM (layout in qgemm_tc_cuda.h).
//
// A CTA of 8 warps (one m16 tile of rows) or 4 (two or four) owns one 32-wide
// strip of output features per warp and 16 * MT rows of x, over a slice of K (split-K when the grid would otherwise
// not fill the GPU). Chunks of 64 inputs stream through a multi-stage
// cp.async pipeline into shared memory: the warps' codes (each lane later
// reads back exactly the 16 bytes it needs), the rows of x (XOR-swizzled so
// ldmatrix is conflict-free) and the group scales. Codes become fp16/bf16 in
// registers with the magic-number trick (OR a nibble into the mantissa of
// 1024.0 / 128.0, subtract 1024 + z / 128 + z: exactly q - z) and are scaled
// per group before mma.m16n8k16 with fp32 accumulation; per-channel scales
// are applied to the fp32 sums instead. Split-K partial sums go to a
// workspace and the last CTA to finish a tile adds them in split order, so
// results do not depend on timing.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "float_types.cuh"
#include "qgemm_tc_cuda.h"

namespace quantcore::kernels {

namespace {

// Warps per CTA, side by side along N: 8 for one m16 tile (every row of x
// in shared memory then feeds twice the outputs), 4 with more rows.
template <int MT>
constexpr int kWarps = MT == 1 ? 8 : 4;
template <int MT>
constexpr int kThreads = 32 * kWarps<MT>;
constexpr int kStripN = 32;                 // output features per warp
template <int MT>
constexpr int kCtaN = kStripN * kWarps<MT>;  // output features per CTA
constexpr int kChunkK = 64;                 // inputs per pipeline stage
constexpr int kTileK = 32;                  // inputs per 16-byte code load of a lane
constexpr int kTilesPerChunk = kChunkK / kTileK;
// Pipeline depth: deeper where stages are small; shared memory (and so the
// CTAs per SM) is the price of each stage.
template <int MT>
constexpr int kStages = MT == 1 ? 5 : MT == 2 ? 4 : 4;
constexpr int kMaxSplits = 16;

// ------------------------------------------------------------ PTX wrappers

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy; `valid == false` writes zeros instead.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
// Codes are read once: ask L2 to evict them first, so x and the scales stay.
__device__ __forceinline__ void cp_async16_stream(void* dst, const void* src, bool valid, uint64_t policy) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0), "l"(policy));
}
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t mask, uint32_t magic) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(a), "r"(mask), "r"(magic));  // (a & mask) | magic
  return r;
}

// ------------------------------------------------------ per-dtype helpers

template <typename T>
struct Half2Of;
template <>
struct Half2Of<__half> {
  using type = __half2;
};
template <>
struct Half2Of<__nv_bfloat16> {
  using type = __nv_bfloat162;
};

template <typename T2>
__device__ __forceinline__ uint32_t as_u32(T2 v) {
  return *reinterpret_cast<uint32_t*>(&v);
}
template <typename T2>
__device__ __forceinline__ T2 from_u32(uint32_t u) {
  return *reinterpret_cast<T2*>(&u);
}

template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The four B-fragment registers of one code word: (b0, b1) of the n8 block
// with n = g and of the block with n = g + 8, as (q - z) exactly, not yet scaled.
// `off_lo` / `off_hi` hold the magic number plus the zero point of each block.
template <typename T>
struct Dequant;

template <>
struct Dequant<__half> {
  static constexpr float kMagic = 1024.f;  // fp16 0x6400: ulp 1
  __device__ __forceinline__ static void run(uint32_t q, __half2 off_lo, __half2 off_hi, uint32_t (&b)[4]) {
    // The high nibble of a byte lands at 1024 + 16 q: times 1/16 minus 64 + z
    // (= off - 960, exact) leaves q - z, one fma.
    const __half2 sixteenth = __float2half2_rn(1.f / 16.f), d960 = __float2half2_rn(960.f);
    const __half2 hi_lo = __hneg2(__hsub2(off_lo, d960)), hi_hi = __hneg2(__hsub2(off_hi, d960));
    const uint32_t q8 = q >> 8;
    b[0] = as_u32(__hsub2(from_u32<__half2>(lop3_and_or(q, 0x000f000fu, 0x64006400u)), off_lo));
    b[1] = as_u32(__hfma2(from_u32<__half2>(lop3_and_or(q, 0x00f000f0u, 0x64006400u)), sixteenth, hi_lo));
    b[2] = as_u32(__hsub2(from_u32<__half2>(lop3_and_or(q8, 0x000f000fu, 0x64006400u)), off_hi));
    b[3] = as_u32(__hfma2(from_u32<__half2>(lop3_and_or(q8, 0x00f000f0u, 0x64006400u)), sixteenth, hi_hi));
  }
};

template <>
struct Dequant<__nv_bfloat16> {
  static constexpr float kMagic = 128.f;  // bf16 0x4300: ulp 1 (7 mantissa bits, so one nibble per shift)
  __device__ __forceinline__ static void run(uint32_t q, __nv_bfloat162 off_lo, __nv_bfloat162 off_hi,
                                             uint32_t (&b)[4]) {
    b[0] = as_u32(__hsub2(from_u32<__nv_bfloat162>(lop3_and_or(q, 0x000f000fu, 0x43004300u)), off_lo));
    b[1] = as_u32(__hsub2(from_u32<__nv_bfloat162>(lop3_and_or(q >> 4, 0x000f000fu, 0x43004300u)), off_lo));
    b[2] = as_u32(__hsub2(from_u32<__nv_bfloat162>(lop3_and_or(q >> 8, 0x000f000fu, 0x43004300u)), off_hi));
    b[3] = as_u32(__hsub2(from_u32<__nv_bfloat162>(lop3_and_or(q >> 12, 0x000f000fu, 0x43004300u)), off_hi));
  }
};

template <typename T>
__device__ __forceinline__ typename Half2Of<T>::type splat(float v);
template <>
__device__ __forceinline__ __half2 splat<__half>(float v) { return __float2half2_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat162 splat<__nv_bfloat16>(float v) { return __float2bfloat162_rn(v); }

// ------------------------------------------------------------ shared memory

template <typename ScaleT, int MT>
struct Stage {
  uint4 codes[kWarps<MT>][kTilesPerChunk][32];  // per warp, per tile, per lane
  uint4 x[MT * 16][kChunkK / 8];            // rows of x, 16-byte chunks XOR-swizzled by row
  ScaleT scales[kTilesPerChunk][kCtaN<MT>];  // each tile's group, for the CTA's outputs
  uint8_t zeros[kTilesPerChunk][kCtaN<MT>];
};

// Raw (q - z) x sums are scaled per group in fp32 ("late") when MT <= 2: one
// fma per accumulator and group instead of a multiply per weight pair. With
// MT = 4 the second set of accumulators would not fit in registers, so the
// weights are scaled before the mma instead (per-channel scales still late).
template <int MT>
constexpr bool kLate = MT <= 2;

// Per-thread copy cursor: where this thread's 16-byte copies of the next
// chunk come from (advanced by a constant per chunk, no index arithmetic in
// the loop) and go to. Every thread copies codes and x; the first few also a
// slice of one tile's group scales or zeros, following the group by counting
// tiles.
template <typename T, typename ScaleT, int MT>
struct CopyCursor {
  static constexpr int kCodeCopies = kWarps<MT> * kTilesPerChunk * 32 / kThreads<MT>;
  static constexpr int kXCopies = (MT * 16 * 8 + kThreads<MT> - 1) / kThreads<MT>;
  static constexpr int kScaleCopies = kCtaN<MT> * int(sizeof(ScaleT)) / 16;  // per tile
  static constexpr int kZeroCopies = kCtaN<MT> / 16;                         // per tile
  const int32_t* code_src[kCodeCopies];
  const T* x_src[kXCopies];
  const char* group_src;  // this thread's 16 bytes of its tile's group scales (or zeros)
  int64_t group_step;     // bytes from one group's row to the next
  int code_dst[kCodeCopies], x_dst[kXCopies], group_dst;  // byte offsets into a Stage
  bool code_ok[kCodeCopies], x_ok[kXCopies], x_used[kXCopies], group_ok;
  int group_tile;         // tile index of this thread's tile inside its group; -1: no group copy
  int tiles_per_group;
};

struct Ctx {
  int64_t m0, n0, chunk_begin, chunk_end;
};

template <typename T, typename ScaleT, int MT>
__device__ __forceinline__ CopyCursor<T, ScaleT, MT> make_cursor(const QGemmTcArgs& a, const Ctx& cx) {
  using C = CopyCursor<T, ScaleT, MT>;
  using St = Stage<ScaleT, MT>;
  C p;
  const int tid = threadIdx.x;
  const int64_t strips = a.N / kStripN, strip0 = cx.n0 / kStripN;
#pragma unroll
  for (int i = 0; i < C::kCodeCopies; ++i) {
    const int idx = tid + i * kThreads<MT>;
    const int w = idx / (kTilesPerChunk * 32), tile = (idx / 32) % kTilesPerChunk, lane = idx % 32;
    p.code_ok[i] = strip0 + w < strips;
    const int64_t strip = p.code_ok[i] ? strip0 + w : 0;
    p.code_src[i] = a.codes + (strip * (a.K / kTileK) + cx.chunk_begin * kTilesPerChunk + tile) * 128 + lane * 4;
    p.code_dst[i] = int(offsetof(St, codes)) + ((w * kTilesPerChunk + tile) * 32 + lane) * 16;
  }
  const T* x = reinterpret_cast<const T*>(a.x);
#pragma unroll
  for (int i = 0; i < C::kXCopies; ++i) {
    const int idx = tid + i * kThreads<MT>;
    const int row = idx / 8, ch = idx % 8;
    p.x_used[i] = idx < MT * 16 * 8;
    p.x_ok[i] = cx.m0 + row < a.M;
    p.x_src[i] = x + (p.x_ok[i] ? cx.m0 + row : 0) * a.K + cx.chunk_begin * kChunkK + ch * 8;
    p.x_dst[i] = int(offsetof(St, x)) + (row * (kChunkK / 8) + (ch ^ (row & 7))) * 16;
  }
  p.tiles_per_group = int(a.group_size / kTileK);
  p.group_tile = -1;
  p.group_src = nullptr;
  p.group_step = 0;
  p.group_dst = 0;
  p.group_ok = false;
  const bool is_scale = tid < kTilesPerChunk * C::kScaleCopies;
  const bool is_zero = !is_scale && a.zeros && tid < kTilesPerChunk * (C::kScaleCopies + C::kZeroCopies);
  if (is_scale || is_zero) {
    const int r = is_scale ? tid : tid - kTilesPerChunk * C::kScaleCopies;
    const int per_tile = is_scale ? C::kScaleCopies : C::kZeroCopies;
    const int tile = r / per_tile, part = r % per_tile;
    const int elem = int(is_scale ? sizeof(ScaleT) : 1);
    const int64_t kt = cx.chunk_begin * kTilesPerChunk + tile;
    const int64_t col = cx.n0 + int64_t(part) * 16 / elem;
    p.group_ok = col < a.N;
    const char* base = is_scale ? reinterpret_cast<const char*>(a.scales) : reinterpret_cast<const char*>(a.zeros);
    p.group_step = a.N * elem;
    p.group_src = base + (kt / p.tiles_per_group) * p.group_step + (p.group_ok ? col : 0) * elem;
    p.group_tile = int(kt % p.tiles_per_group);
    p.group_dst = is_scale ? int(offsetof(St, scales)) + (tile * kCtaN<MT>) * int(sizeof(ScaleT)) + part * 16
                           : int(offsetof(St, zeros)) + tile * kCtaN<MT> + part * 16;
  }
  return p;
}

// Issues the copies of the cursor's chunk into `st` and moves the cursor to the
// next chunk: codes (evict-first), x (rows past M read as zeros), and each
// tile's group scales and zeros for the CTA's outputs (outputs past N as zeros).
template <typename T, typename ScaleT, int MT>
__device__ __forceinline__ void load_stage(CopyCursor<T, ScaleT, MT>& p, Stage<ScaleT, MT>& st, uint64_t policy) {
  using C = CopyCursor<T, ScaleT, MT>;
  char* base = reinterpret_cast<char*>(&st);
#pragma unroll
  for (int i = 0; i < C::kCodeCopies; ++i) {
    cp_async16_stream(base + p.code_dst[i], p.code_src[i], p.code_ok[i], policy);
    p.code_src[i] += kTilesPerChunk * 128;
  }
#pragma unroll
  for (int i = 0; i < C::kXCopies; ++i) {
    if (p.x_used[i]) cp_async16(base + p.x_dst[i], p.x_src[i], p.x_ok[i]);
    p.x_src[i] += kChunkK;
  }
  if (p.group_tile >= 0) {
    cp_async16(base + p.group_dst, p.group_src, p.group_ok);
    // The thread's tile moves kTilesPerChunk tiles on: into the next group(s)?
    p.group_tile += kTilesPerChunk;
    while (p.group_tile >= p.tiles_per_group) {
      p.group_tile -= p.tiles_per_group;
      p.group_src += p.group_step;
    }
  }
}

// A group's parameters in registers: per n8 block j, the magic number plus
// zero point of column n = 8 j + g (for the B fragments), and either the scale
// of that column (weights scaled before the mma) or the scales of columns
// 8 j + 2 t and + 1 (sums scaled late).
template <typename T>
struct GroupParams {
  typename Half2Of<T>::type off[4], scale_b[4];
  float2 scale_c[4];
};

template <typename T, typename ScaleT, int MT>
__device__ __forceinline__ void load_group(const QGemmTcArgs& a, const Stage<ScaleT, MT>& st, int tile, bool late,
                                           GroupParams<T>& gp) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int col_b = warp * kStripN + j * 8 + g, col_c = warp * kStripN + j * 8 + 2 * t;
    const float z = a.zeros ? float(st.zeros[tile][col_b]) : 8.f;
    gp.off[j] = splat<T>(Dequant<T>::kMagic + z);
    if (late) {
      gp.scale_c[j] = make_float2(to_float<ScaleT>(st.scales[tile][col_c]), to_float<ScaleT>(st.scales[tile][col_c + 1]));
    } else {
      gp.scale_b[j] = splat<T>(to_float<ScaleT>(st.scales[tile][col_b]));
    }
  }
}

template <int MT>
__device__ __forceinline__ void flush_group(float (&acc)[MT][4][4], float (&part)[MT][4][4], const float2 (&s)[4]) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      acc[m][j][0] = fmaf(part[m][j][0], s[j].x, acc[m][j][0]);
      acc[m][j][1] = fmaf(part[m][j][1], s[j].y, acc[m][j][1]);
      acc[m][j][2] = fmaf(part[m][j][2], s[j].x, acc[m][j][2]);
      acc[m][j][3] = fmaf(part[m][j][3], s[j].y, acc[m][j][3]);
      part[m][j][0] = part[m][j][1] = part[m][j][2] = part[m][j][3] = 0.f;
    }
}

// The mma's of one tile and one 16-wide k step, from its code words and x fragments.
template <typename T, int MT>
__device__ __forceinline__ void tile_math(const uint32_t (&q)[4], int ks, const uint32_t (&afrag)[MT][4],
                                          const GroupParams<T>& gp, bool scale_late, float (&sums)[MT][4][4]) {
  using T2 = typename Half2Of<T>::type;
#pragma unroll
  for (int np = 0; np < 2; ++np) {
    uint32_t b[4];
    Dequant<T>::run(q[ks * 2 + np], gp.off[np * 2], gp.off[np * 2 + 1], b);
    if (!scale_late) {
      b[0] = as_u32(__hmul2(from_u32<T2>(b[0]), gp.scale_b[np * 2]));
      b[1] = as_u32(__hmul2(from_u32<T2>(b[1]), gp.scale_b[np * 2]));
      b[2] = as_u32(__hmul2(from_u32<T2>(b[2]), gp.scale_b[np * 2 + 1]));
      b[3] = as_u32(__hmul2(from_u32<T2>(b[3]), gp.scale_b[np * 2 + 1]));
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      mma_16816<T>(sums[m][np * 2], afrag[m], b[0], b[1]);
      mma_16816<T>(sums[m][np * 2 + 1], afrag[m], b[2], b[3]);
    }
  }
}

template <typename ScaleT, int MT>
__device__ __forceinline__ void load_x_frags(const Stage<ScaleT, MT>& st, int tile, int ks, uint32_t (&afrag)[MT][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    const int row = m * 16 + (lane % 16);
    const int ch = tile * 4 + ks * 2 + lane / 16;
    ldmatrix_x4(afrag[m], &st.x[row][ch ^ (row & 7)]);
  }
}

// One chunk. Late scaling (MT <= 2): every fragment of the chunk is read from
// shared memory first, then the group bookkeeping (a uniform branch where a
// group starts), then the math. Early scaling (MT = 4): the group's
// parameters are read for every tile, with no branch at all.
template <typename T, typename ScaleT, int MT>
__device__ __forceinline__ void compute_stage(const QGemmTcArgs& a, const Stage<ScaleT, MT>& st, bool first_chunk,
                                              int tiles_per_group, int& gtile, bool scale_late, GroupParams<T>& gp,
                                              float (&acc)[MT][4][4], float (&sums)[MT][4][4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  uint32_t q[kTilesPerChunk][4];
#pragma unroll
  for (int tile = 0; tile < kTilesPerChunk; ++tile) {
    const uint4 q4 = st.codes[warp][tile][lane];
    q[tile][0] = q4.x, q[tile][1] = q4.y, q[tile][2] = q4.z, q[tile][3] = q4.w;
  }
  if constexpr (kLate<MT>) {
    uint32_t afrag[kTilesPerChunk][2][MT][4];
#pragma unroll
    for (int tile = 0; tile < kTilesPerChunk; ++tile)
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) load_x_frags<ScaleT, MT>(st, tile, ks, afrag[tile][ks]);
#pragma unroll
    for (int tile = 0; tile < kTilesPerChunk; ++tile) {
      const bool starts = gtile == 0 || (first_chunk && tile == 0);
      if (++gtile == tiles_per_group) gtile = 0;
      if (starts) {
        if (!(first_chunk && tile == 0)) flush_group<MT>(acc, sums, gp.scale_c);
        load_group<T, ScaleT, MT>(a, st, tile, true, gp);
      }
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) tile_math<T, MT>(q[tile], ks, afrag[tile][ks], gp, true, sums);
    }
  } else {
#pragma unroll
    for (int tile = 0; tile < kTilesPerChunk; ++tile) {
      load_group<T, ScaleT, MT>(a, st, tile, scale_late, gp);
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) {
        uint32_t afrag[MT][4];
        load_x_frags<ScaleT, MT>(st, tile, ks, afrag);
        tile_math<T, MT>(q[tile], ks, afrag, gp, scale_late, sums);
      }
    }
  }
}

// Calls f(m, j, half, row, n) for each pair of accumulators acc[m][j][2 half],
// acc[m][j][2 half + 1] this thread holds: output row `row`, columns n, n + 1
// (columns past N skipped; rows past M are in the padded workspace).
template <int MT, typename F>
__device__ __forceinline__ void for_each_pair(const Ctx& cx, int64_t N, F&& f) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t row = cx.m0 + m * 16 + g + half * 8, n = cx.n0 + warp * kStripN + j * 8 + 2 * t;
        if (n < N) f(m, j, half, row, n);
      }
}

// Writes the CTA's tile plus bias; `acc` holds the full, scaled sums.
template <typename T, int MT>
__device__ __forceinline__ void store_tile(const QGemmTcArgs& a, const Ctx& cx, const float (&acc)[MT][4][4]) {
  T* y = reinterpret_cast<T*>(a.y);
  const T* bias = reinterpret_cast<const T*>(a.bias);
  for_each_pair<MT>(cx, a.N, [&](int m, int j, int half, int64_t row, int64_t n) {
    if (row >= a.M) return;
    const float b0 = bias ? to_float<T>(bias[n]) : 0.f, b1 = bias ? to_float<T>(bias[n + 1]) : 0.f;
    typename Half2Of<T>::type out;
    out.x = from_float<T>(acc[m][j][half * 2] + b0);
    out.y = from_float<T>(acc[m][j][half * 2 + 1] + b1);
    *reinterpret_cast<typename Half2Of<T>::type*>(y + row * a.N + n) = out;
  });
}

template <typename T, typename ScaleT, int MT>
__global__ void __launch_bounds__(kThreads<MT>) qgemm_w4_tc_kernel(QGemmTcArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* stages = reinterpret_cast<Stage<ScaleT, MT>*>(smem_raw);
  const int splits = a.splits;
  const int64_t chunks = a.K / kChunkK;
  const int split = blockIdx.z;
  Ctx cx;
  cx.m0 = int64_t(blockIdx.x) * MT * 16;
  cx.n0 = int64_t(blockIdx.y) * kCtaN<MT>;
  cx.chunk_begin = chunks * split / splits;
  cx.chunk_end = chunks * (split + 1) / splits;
  const bool per_channel = a.group_size == a.K;
  const bool scale_late = kLate<MT> || per_channel;
  const uint64_t policy = evict_first_policy();
  CopyCursor<T, ScaleT, MT> cursor = make_cursor<T, ScaleT, MT>(a, cx);

  float acc[MT][4][4], part[kLate<MT> ? MT : 1][4][4];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][j][e] = 0.f;
#pragma unroll
  for (int m = 0; m < (kLate<MT> ? MT : 1); ++m)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) part[m][j][e] = 0.f;
  GroupParams<T> gp;
  // Tiles per group, and the math's position inside the current group.
  const int tiles_per_group = int(a.group_size / kTileK);
  int math_gtile = int((cx.chunk_begin * kTilesPerChunk) % tiles_per_group);

  const int64_t n_chunks = cx.chunk_end - cx.chunk_begin;
#pragma unroll
  for (int s = 0; s < kStages<MT> - 1; ++s) {
    if (s < n_chunks)
      load_stage<T, ScaleT, MT>(cursor, stages[s], policy);
    cp_async_commit();
  }
  for (int64_t it = 0; it < n_chunks; ++it) {
    cp_async_wait<kStages<MT> - 2>();
    __syncthreads();  // chunk `it` is visible to all; the slot of chunk it - 1 is free
    const int64_t next = it + kStages<MT> - 1;
    if (next < n_chunks)
      load_stage<T, ScaleT, MT>(cursor, stages[next % kStages<MT>], policy);
    cp_async_commit();
    if constexpr (kLate<MT>)
      compute_stage<T, ScaleT, MT>(a, stages[it % kStages<MT>], it == 0, tiles_per_group, math_gtile, scale_late,
                                   gp, acc, part);
    else
      compute_stage<T, ScaleT, MT>(a, stages[it % kStages<MT>], it == 0, tiles_per_group, math_gtile, scale_late,
                                   gp, acc, acc);
  }
  cp_async_wait<0>();
  if (n_chunks > 0) {
    if constexpr (kLate<MT>) {
      flush_group<MT>(acc, part, gp.scale_c);
    } else if (per_channel) {  // raw sums in acc: scale them now
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc[m][j][0] *= gp.scale_c[j].x;
          acc[m][j][1] *= gp.scale_c[j].y;
          acc[m][j][2] *= gp.scale_c[j].x;
          acc[m][j][3] *= gp.scale_c[j].y;
        }
    }
  }

  if (splits == 1) {
    store_tile<T, MT>(a, cx, acc);
    return;
  }
  // Split-K: publish this slice's sums; the last CTA of the tile adds all
  // slices in split order (deterministic) and writes the output.
  const int64_t m_pad = int64_t(gridDim.x) * MT * 16;
  auto ws_at = [&](int s, int64_t row, int64_t n) { return a.workspace + (int64_t(s) * m_pad + row) * a.N + n; };
  for_each_pair<MT>(cx, a.N, [&](int m, int j, int half, int64_t row, int64_t n) {
    __stcg(reinterpret_cast<float2*>(ws_at(split, row, n)), make_float2(acc[m][j][half * 2], acc[m][j][half * 2 + 1]));
  });
  __threadfence();
  __syncthreads();
  __shared__ int arrived;
  if (threadIdx.x == 0) arrived = atomicAdd(a.counters + blockIdx.x * gridDim.y + blockIdx.y, 1);
  __syncthreads();
  if (arrived != splits - 1) return;
  __threadfence();
  for_each_pair<MT>(cx, a.N, [&](int m, int j, int half, int64_t row, int64_t n) {
    float2 sum = make_float2(0.f, 0.f);
    for (int s = 0; s < splits; ++s) {
      const float2 v = __ldcg(reinterpret_cast<const float2*>(ws_at(s, row, n)));
      sum.x += v.x;
      sum.y += v.y;
    }
    acc[m][j][half * 2] = sum.x;
    acc[m][j][half * 2 + 1] = sum.y;
  });
  store_tile<T, MT>(a, cx, acc);
}

// ------------------------------------------------------------------ launch

int rows_per_cta(int64_t M) { return M <= 16 ? 16 : M <= 32 ? 32 : 64; }
int cta_n(int64_t M) { return M <= 16 ? kCtaN<1> : kCtaN<2>; }

template <typename T, typename ScaleT, int MT>
struct Config {
  using Act = T;
  using Scale = ScaleT;
  static constexpr int kMT = MT;
  static constexpr int kSmem = kStages<MT> * int(sizeof(Stage<ScaleT, MT>));
  static constexpr int kThreadsPerCta = kThreads<MT>;
  static constexpr auto kernel() { return qgemm_w4_tc_kernel<T, ScaleT, MT>; }
};

// Calls f(Config<...>{}) for the instantiation that serves `a`.
template <typename F>
cudaError_t visit(const QGemmTcArgs& a, F&& f) {
  auto rows = [&](auto act, auto scale) {
    using T = decltype(act);
    using S = decltype(scale);
    switch (rows_per_cta(a.M)) {
      case 16: return f(Config<T, S, 1>{});
      case 32: return f(Config<T, S, 2>{});
      default: return f(Config<T, S, 4>{});
    }
  };
  auto scales = [&](auto act) {
    switch (a.scale) {
      case GpuFloat::kF16: return rows(act, __half{});
      case GpuFloat::kBF16: return rows(act, __nv_bfloat16{});
      default: return rows(act, float{});
    }
  };
  return a.act == GpuFloat::kBF16 ? scales(__nv_bfloat16{}) : scales(__half{});
}

// Opts the kernel in to its shared memory (per device) and returns how many
// CTAs fit on one SM.
template <typename C>
cudaError_t prepare(int* ctas_per_sm) {
  static unsigned long long configured = 0;  // bit d: done on device d (a race only repeats the call)
  static int occupancy[64] = {};
  int dev = 0;
  cudaGetDevice(&dev);
  const int slot = dev < 64 ? dev : 63;
  if (dev >= 64 || !(configured >> dev & 1ull)) {
    cudaError_t e = cudaFuncSetAttribute(C::kernel(), cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem);
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occupancy[slot], C::kernel(), C::kThreadsPerCta,
                                                                            C::kSmem);
    if (e != cudaSuccess) return e;
    if (dev < 64) configured |= 1ull << dev;
  }
  if (ctas_per_sm) *ctas_per_sm = occupancy[slot] > 0 ? occupancy[slot] : 1;
  return cudaSuccess;
}

int sm_count() {
  static int count = 0;
  if (count == 0) {
    int dev = 0, c = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, dev);
    count = c > 0 ? c : 1;
  }
  return count;
}

}  // namespace

bool qgemm_tc_supported(int64_t N, int64_t K, int64_t group_size) {
  return N > 0 && K > 0 && N % kStripN == 0 && K % kChunkK == 0 && group_size > 0 && K % group_size == 0 &&
         group_size % kTileK == 0;
}

int qgemm_tc_plan(QGemmTcArgs& a) {
  if (a.splits > 0) return a.splits;
  int occupancy = 1;
  if (visit(a, [&](auto cfg) { return prepare<decltype(cfg)>(&occupancy); }) != cudaSuccess) occupancy = 1;
  // Split K so the CTAs fill whole waves, without paying more for the partial
  // sums than the split saves. In units of one CTA streaming all of K: a CTA
  // of a split in s streams 1/s of it and writes its fp32 partial tile
  // (8 Mpad / K of the codes' bytes); the last one of a tile reads all s
  // (from L2, counted at half: the sweep below fits that best).
  // (benchmarks/sweep_qgemm_tc_splits.py measures every factor.)
  const int64_t rows = rows_per_cta(a.M);
  const int64_t m_pad = (a.M + rows - 1) / rows * rows;
  const int64_t tiles = m_pad / rows * ((a.N + cta_n(a.M) - 1) / cta_n(a.M));
  const int64_t slots = int64_t(occupancy) * sm_count();
  const double partial = 8.0 * double(rows) / double(a.K);
  int64_t max_splits = a.K / kChunkK / 4;
  if (max_splits > kMaxSplits) max_splits = kMaxSplits;
  int best = 1;
  double best_cost = 1e30;
  for (int64_t s = 1; s <= (max_splits > 1 ? max_splits : 1); ++s) {
    const double waves = double((tiles * s + slots - 1) / slots);
    const double cost =
        waves * (1.0 / double(s) + (s > 1 ? partial : 0.0)) + (s > 1 ? partial * double(s) / 2 : 0.0);
    if (cost < best_cost - 1e-9) {
      best_cost = cost;
      best = int(s);
    }
  }
  a.splits = best;
  return a.splits;
}

int64_t qgemm_tc_workspace(const QGemmTcArgs& a) {
  if (a.splits <= 1) return 0;
  const int64_t rows = rows_per_cta(a.M), m_pad = (a.M + rows - 1) / rows * rows;
  return int64_t(a.splits) * m_pad * a.N;
}

int64_t qgemm_tc_counters(const QGemmTcArgs& a) {
  if (a.splits <= 1) return 0;
  const int64_t rows = rows_per_cta(a.M);
  return (a.M + rows - 1) / rows * ((a.N + cta_n(a.M) - 1) / cta_n(a.M));
}

int qgemm_tc_cuda(const QGemmTcArgs& a, void* stream) {
  if (!qgemm_tc_supported(a.N, a.K, a.group_size) || a.splits < 1 || a.splits > kMaxSplits ||
      (a.act != GpuFloat::kF16 && a.act != GpuFloat::kBF16))
    return int(cudaErrorInvalidValue);
  if (a.splits > 1 && (a.workspace == nullptr || a.counters == nullptr)) return int(cudaErrorInvalidValue);
  if (a.M == 0) return 0;
  cudaStream_t stream_ = static_cast<cudaStream_t>(stream);
  return int(visit(a, [&](auto cfg) {
    using C = decltype(cfg);
    if (cudaError_t e = prepare<C>(nullptr); e != cudaSuccess) return e;
    const int rows = C::kMT * 16;
    constexpr int n_per_cta = kCtaN<C::kMT>;
    const dim3 grid(unsigned((a.M + rows - 1) / rows), unsigned((a.N + n_per_cta - 1) / n_per_cta), unsigned(a.splits));
    C::kernel()<<<grid, C::kThreadsPerCta, C::kSmem, stream_>>>(a);
    return cudaGetLastError();
  }));
}

}  // namespace quantcore::kernels
