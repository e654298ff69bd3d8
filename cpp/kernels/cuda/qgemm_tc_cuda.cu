// W4A16 tensor-core GEMM (layout in qgemm_tc_cuda.h).
//
// Work: the output is cut into tiles of 16 * MT rows by 32 * WARPS outputs (one
// 32-wide strip per warp), and K into chunks of 32 * TPC inputs. The
// (tile, chunk) units, tile-major, are dealt out evenly to one wave of CTAs
// (stream-K): CTA p takes units [p U / G, (p + 1) U / G), so every SM has the
// same amount of work whatever the shape. A CTA runs one continuous cp.async
// pipeline over its units, across tile boundaries; where it ends a tile that
// it shares with other CTAs, it writes its fp32 partial tile to a workspace
// slot, and the last CTA to arrive adds the tile's partials in CTA order (so
// results do not depend on timing) and writes the output.
//
// A stage holds, for one chunk, the warps' codes (each lane later reads back
// exactly the 16 bytes it needs per 32-wide K tile), the rows of x
// (XOR-swizzled so ldmatrix is conflict-free) and each K tile's group scales
// and zeros. Codes become fp16/bf16 in registers with the magic-number trick
// (OR a nibble into the mantissa of 1024.0 / 128.0, subtract 1024 + z /
// 128 + z: exactly q - z) and go to mma.m16n8k16 with fp32 accumulation.
// With up to 32 rows the (q - z) x sums of each group are scaled in fp32 when
// the group ends; with more rows the weights are scaled before the mma.
// Per-channel scales are applied to the fp32 sums.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>

#include "float_types.cuh"
#include "mma_w4.cuh"
#include "qgemm_few_cuda.h"
#include "qgemm_tc_cuda.h"
#include "qgemm_wg_cuda.h"
#include "weight_stream.cuh"

namespace quantcore::kernels {

namespace {

constexpr int kStripN = 32;  // output features per warp
constexpr int kTileK = 32;   // inputs per 16-byte code load of a lane
constexpr int kMaxSplits = 16;

// A CTA's shape: MT m16 tiles of rows, WARPS warps side by side along N, TPC
// K tiles per pipeline stage, STAGES stages, at least MIN_CTAS CTAs per SM
// (the register budget).
template <int MT_, int WARPS_, int TPC_, int STAGES_, int MIN_CTAS_>
struct Shape {
  static constexpr int MT = MT_, kWarps = WARPS_, kTPC = TPC_, kStages = STAGES_, kMinCtas = MIN_CTAS_;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kCtaN = kStripN * kWarps;
  static constexpr int kRows = 16 * MT;
  static constexpr int kChunkK = kTileK * kTPC;
  static constexpr int kRowBytes = kChunkK * 2;  // one row of x in a stage
  // Raw (q - z) x sums are scaled per group in fp32 ("late") when MT <= 2:
  // one fma per accumulator and group instead of a multiply per weight pair.
  // With MT = 4 a second set of accumulators would not fit in registers.
  static constexpr bool kLate = MT <= 2;
};

// 16 and 64 rows: 8 warps (every row of x in shared memory feeds 256
// outputs; at 64 rows copying x costs more than copying the codes), four K
// tiles a stage (two where K is not a multiple of 128).
using Rows16 = Shape<1, 8, 4, 4, 2>;
using Rows16K64 = Shape<1, 8, 2, 6, 2>;
using Rows32 = Shape<2, 4, 2, 4, 3>;
using Rows64 = Shape<4, 8, 4, 4, 1>;
using Rows64K64 = Shape<4, 8, 2, 4, 1>;

// ------------------------------------------------------------ PTX wrappers

// Codes are read once: ask L2 to evict them first, so x and the scales stay.
__device__ __forceinline__ void cp_async16_stream(uint32_t dst, const void* src, bool valid, uint64_t policy) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0), "l"(policy));
}
// threadIdx.x, read where it is used: code that runs rarely (a tile's end, a
// group's start) then does not keep its index arithmetic in registers for
// the whole main loop.
__device__ __forceinline__ int tid_here() {
  int t;
  asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(t));
  return t;
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// ------------------------------------------------------------ shared memory

template <typename ScaleT, class P>
struct Stage {
  uint4 codes[P::kWarps][P::kTPC][32];     // per warp, per K tile, per lane
  uint4 x[P::kRows][P::kChunkK / 8];       // rows of x, 16-byte pieces XOR-swizzled by row
  ScaleT scales[P::kTPC][P::kCtaN];        // each K tile's group, for the CTA's outputs
  uint8_t zeros[P::kTPC][P::kCtaN];
};

// The split of the work into tiles, chunks and CTAs (same on host and device).
struct Work {
  int mblocks = 1, tiles = 1, chunks = 1;
  int64_t units = 1, ctas = 1;
  // First unit of CTA p (p = ctas: the end).
  __host__ __device__ int64_t begin(int64_t p) const { return p * units / ctas; }
  // The CTA whose units include u.
  __host__ __device__ int64_t owner(int64_t u) const { return ((u + 1) * ctas + units - 1) / units - 1; }
};

// Per-thread copy cursor of the pipeline: where this thread's 16-byte copies
// of the next chunk come from and go to. Each warp copies its own strip's
// codes (TPC x 512 contiguous bytes); every thread copies rows of x; some
// threads a slice of one K tile's group scales or zeros, following the group
// by counting tiles. Crossing into the next tile re-aims everything.
template <typename T, typename ScaleT, class P>
struct Loader {
  using St = Stage<ScaleT, P>;
  static constexpr int kXPieces = P::kRows * P::kTPC * 4;
  static constexpr int kXCopies = (kXPieces + P::kThreads - 1) / P::kThreads;
  static constexpr int kXRowStep = P::kThreads / (P::kTPC * 4);
  static constexpr int kScaleParts = P::kCtaN * int(sizeof(ScaleT)) / 16;  // per K tile
  static constexpr int kZeroParts = P::kCtaN / 16;
  static constexpr int kGroupCopies = (P::kTPC * (kScaleParts + kZeroParts) + P::kThreads - 1) / P::kThreads;
  static_assert(kXPieces % P::kThreads == 0 || kXCopies == 1, "x copies");
  static_assert(kXRowStep % 8 == 0, "a thread's rows of x share their swizzle");

  const int32_t* code_src;
  const T* x_src;  // copy 0's row (row 0 of x where that row is past M); copy i is kXRowStep i rows on
  const char* g_src[kGroupCopies];
  int64_t g_step[kGroupCopies];
  int g_in[kGroupCopies];  // K tile of the copy inside its group; -1: no copy
  int g_dst[kGroupCopies];
  bool code_ok, g_ok[kGroupCopies];
  unsigned x_ok;  // bit i: copy i's row is below M
  int code_dst, x_dst;
  int tile, chunk;

  __device__ __forceinline__ void setup() {
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    code_dst = int(offsetof(St, codes)) + (warp * P::kTPC * 32 + lane) * 16;
    const int row = tid / (P::kTPC * 4), ch = tid % (P::kTPC * 4);
    x_dst = int(offsetof(St, x)) + row * P::kRowBytes + (ch ^ (row & 7)) * 16;
  }

  __device__ __forceinline__ void init(const QGemmTcArgs& a, const Work& w, int t, int c) {
    tile = t;
    chunk = c;
    const int tid = tid_here(), warp = tid / 32, lane = tid % 32;
    const int64_t m0 = int64_t(t % w.mblocks) * P::kRows;
    const int n0 = t / w.mblocks * P::kCtaN;  // N < 2^31 (the codes' row count is N / 32)
    const int64_t strip = n0 / kStripN + warp;
    code_ok = strip < a.N / kStripN;
    code_src = a.codes + ((code_ok ? strip : 0) * (a.K / kTileK) + int64_t(c) * P::kTPC) * 128 + lane * 4;
    const T* x = reinterpret_cast<const T*>(a.x);
    const int row0 = tid / (P::kTPC * 4), ch = tid % (P::kTPC * 4);
    x_ok = 0;
#pragma unroll
    for (int i = 0; i < kXCopies; ++i)
      if (m0 + row0 + i * kXRowStep < a.M) x_ok |= 1u << i;
    x_src = x + ((x_ok & 1) ? m0 + row0 : 0) * a.K + int64_t(c) * P::kChunkK + ch * 8;
    const int tpg = int(a.group_size / kTileK);
#pragma unroll
    for (int i = 0; i < kGroupCopies; ++i) {
      const int j = tid + i * P::kThreads;
      g_in[i] = -1;
      g_src[i] = nullptr;
      g_step[i] = 0;
      g_dst[i] = 0;
      g_ok[i] = false;
      const bool is_scale = j < P::kTPC * kScaleParts;
      const bool is_zero = !is_scale && a.zeros && j < P::kTPC * (kScaleParts + kZeroParts);
      if (is_scale || is_zero) {
        const int r = is_scale ? j : j - P::kTPC * kScaleParts;
        const int parts = is_scale ? kScaleParts : kZeroParts;
        const int kt_in = r / parts, part = r % parts;
        const int elem = is_scale ? int(sizeof(ScaleT)) : 1;
        const int kt = c * P::kTPC + kt_in;
        const int64_t col = n0 + part * 16 / elem;
        g_ok[i] = col < a.N;
        const char* base = is_scale ? reinterpret_cast<const char*>(a.scales) : reinterpret_cast<const char*>(a.zeros);
        g_step[i] = a.N * elem;
        g_src[i] = base + (kt / tpg) * g_step[i] + (g_ok[i] ? col : 0) * elem;
        g_in[i] = kt % tpg;
        g_dst[i] = is_scale ? int(offsetof(St, scales)) + kt_in * P::kCtaN * int(sizeof(ScaleT)) + part * 16
                            : int(offsetof(St, zeros)) + kt_in * P::kCtaN + part * 16;
      }
    }
  }

  // Issues the copies of the cursor's chunk into the stage at shared address
  // `st`: codes (evict-first), x (rows past M as zeros), group scales / zeros
  // (outputs past N as zeros).
  __device__ __forceinline__ void load(uint32_t st, uint64_t policy, int64_t K) const {
#pragma unroll
    for (int t = 0; t < P::kTPC; ++t) cp_async16_stream(st + code_dst + t * 512, code_src + t * 128, code_ok, policy);
#pragma unroll
    for (int i = 0; i < kXCopies; ++i) {
      const bool ok = x_ok >> i & 1;
      if (kXPieces % P::kThreads == 0 || int(threadIdx.x) + i * P::kThreads < kXPieces)
        cp_async16(st + x_dst + i * kXRowStep * P::kRowBytes, ok ? x_src + int64_t(i * kXRowStep) * K : x_src, ok);
    }
#pragma unroll
    for (int i = 0; i < kGroupCopies; ++i)
      if (g_in[i] >= 0) cp_async16(st + g_dst[i], g_src[i], g_ok[i]);
  }

  // Moves on to the next unit.
  __device__ __forceinline__ void advance(const QGemmTcArgs& a, const Work& w, int tpg) {
    code_src += P::kTPC * 128;
    x_src += P::kChunkK;
#pragma unroll
    for (int i = 0; i < kGroupCopies; ++i) {
      if (g_in[i] >= 0) {
        g_in[i] += P::kTPC;
        while (g_in[i] >= tpg) {
          g_in[i] -= tpg;
          g_src[i] += g_step[i];
        }
      }
    }
    if (++chunk == w.chunks && tile + 1 < w.tiles) init(a, w, tile + 1, 0);
  }
};

// A group's parameters in registers: per n8 block j, the magic number plus
// zero point of column n = 8 j + g (for the B fragments), and either the scale
// of that column (weights scaled before the mma) or the scales of columns
// 8 j + 2 t and + 1 (sums scaled late).
template <typename T>
struct GroupParams {
  typename Half2Of<T>::type off[4], scale_b[4];
  float2 scale_c[4];
};

template <typename T, typename ScaleT, class P>
__device__ __forceinline__ void load_group(const Stage<ScaleT, P>& st, int kt, bool has_zeros, bool late,
                                           typename Half2Of<T>::type off_sym, GroupParams<T>& gp) {
  const int tid = tid_here(), warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int col_b = warp * kStripN + j * 8 + g, col_c = warp * kStripN + j * 8 + 2 * t;
    gp.off[j] = has_zeros ? splat<T>(Dequant<T>::kMagic + float(st.zeros[kt][col_b])) : off_sym;
    if (late) {
      gp.scale_c[j] = make_float2(to_float<ScaleT>(st.scales[kt][col_c]), to_float<ScaleT>(st.scales[kt][col_c + 1]));
    } else {
      gp.scale_b[j] = splat<T>(to_float<ScaleT>(st.scales[kt][col_b]));
    }
  }
}

// acc += part * scale, per output column.
template <int MT>
__device__ __forceinline__ void flush_group(float (&acc)[MT][4][4], const float (&part)[MT][4][4],
                                            const float2 (&s)[4]) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      acc[m][j][0] = fmaf(part[m][j][0], s[j].x, acc[m][j][0]);
      acc[m][j][1] = fmaf(part[m][j][1], s[j].y, acc[m][j][1]);
      acc[m][j][2] = fmaf(part[m][j][2], s[j].x, acc[m][j][2]);
      acc[m][j][3] = fmaf(part[m][j][3], s[j].y, acc[m][j][3]);
    }
}

// The mma's of one 32-wide K tile, from its four code words and the x
// fragments of its two 16-wide steps. kFresh: the sums start at this tile.
template <typename T, int MT, bool kFresh>
__device__ __forceinline__ void tile_math(const uint32_t (&q)[4], const uint32_t (&af)[2][MT][4],
                                          const GroupParams<T>& gp, bool scale_b, float (&sums)[MT][4][4]) {
  using T2 = typename Half2Of<T>::type;
#pragma unroll
  for (int ks = 0; ks < 2; ++ks)
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      uint32_t b[4];
      Dequant<T>::run(q[ks * 2 + np], gp.off[np * 2], gp.off[np * 2 + 1], b);
      if (scale_b) {
        b[0] = as_u32(__hmul2(from_u32<T2>(b[0]), gp.scale_b[np * 2]));
        b[1] = as_u32(__hmul2(from_u32<T2>(b[1]), gp.scale_b[np * 2]));
        b[2] = as_u32(__hmul2(from_u32<T2>(b[2]), gp.scale_b[np * 2 + 1]));
        b[3] = as_u32(__hmul2(from_u32<T2>(b[3]), gp.scale_b[np * 2 + 1]));
      }
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (kFresh && ks == 0) {
          mma_16816_zero<T>(sums[m][np * 2], af[ks][m], b[0], b[1]);
          mma_16816_zero<T>(sums[m][np * 2 + 1], af[ks][m], b[2], b[3]);
        } else {
          mma_16816<T>(sums[m][np * 2], af[ks][m], b[0], b[1]);
          mma_16816<T>(sums[m][np * 2 + 1], af[ks][m], b[2], b[3]);
        }
      }
    }
}

// Calls f(m, j, half, r, c) for each pair of accumulators acc[m][j][2 half],
// acc[m][j][2 half + 1] this thread holds: tile row r, tile columns c, c + 1
// (columns past N skipped).
template <class P, typename F>
__device__ __forceinline__ void for_each_pair(int64_t n0, int64_t N, F&& f) {
  const int tid = tid_here(), warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int m = 0; m < P::MT; ++m)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = m * 16 + g + half * 8, c = warp * kStripN + j * 8 + 2 * t;
        if (n0 + c < N) f(m, j, half, r, c);
      }
}

// y[row, n], y[row, n + 1] = v0, v1 plus bias.
template <typename T>
__device__ __forceinline__ void store_pair(const QGemmTcArgs& a, int64_t row, int64_t n, float v0, float v1) {
  const T* bias = reinterpret_cast<const T*>(a.bias);
  const float b0 = bias ? to_float<T>(bias[n]) : 0.f, b1 = bias ? to_float<T>(bias[n + 1]) : 0.f;
  typename Half2Of<T>::type out;
  out.x = from_float<T>(v0 + b0);
  out.y = from_float<T>(v1 + b1);
  *reinterpret_cast<typename Half2Of<T>::type*>(reinterpret_cast<T*>(a.y) + row * a.N + n) = out;
}

// Writes a tile plus bias; `acc` holds the full, scaled sums.
template <typename T, class P>
__device__ __forceinline__ void store_tile(const QGemmTcArgs& a, int64_t m0, int64_t n0,
                                           const float (&acc)[P::MT][4][4]) {
  for_each_pair<P>(n0, a.N, [&](int m, int j, int half, int r, int c) {
    if (m0 + r < a.M) store_pair<T>(a, m0 + r, n0 + c, acc[m][j][half * 2], acc[m][j][half * 2 + 1]);
  });
}

// The end of this CTA's part of `tile`: store it if the CTA did all of it;
// otherwise publish the partial sums in the CTA's slot (0: its first tile,
// 1: its last), and the last of the tile's CTAs to arrive adds all slots in
// CTA order and stores the sum.
template <typename T, class P>
__device__ __forceinline__ void finish_tile(const QGemmTcArgs& a, const Work& w, int64_t p, int tile,
                                            float (&acc)[P::MT][4][4]) {
  const int64_t m0 = int64_t(tile % w.mblocks) * P::kRows, n0 = int64_t(tile / w.mblocks) * P::kCtaN;
  const int64_t pa = w.owner(int64_t(tile) * w.chunks), pb = w.owner(int64_t(tile + 1) * w.chunks - 1);
  if (pa == pb) {
    store_tile<T, P>(a, m0, n0, acc);
    return;
  }
  // CTA q's slot for this tile: every CTA after pa starts its units inside the
  // tile, so the tile is its first (slot 0); pa's first only if it starts at
  // the tile's start.
  constexpr int64_t kTileFloats = int64_t(P::kRows) * P::kCtaN;
  const int first_slot = w.begin(pa) == int64_t(tile) * w.chunks ? 0 : 1;
  auto slot_of = [&](int64_t q) { return a.workspace + (q * 2 + (q == pa ? first_slot : 0)) * kTileFloats; };
  float* mine = slot_of(p);
  for_each_pair<P>(n0, a.N, [&](int m, int j, int half, int r, int c) {
    __stcg(reinterpret_cast<float2*>(mine + r * P::kCtaN + c), make_float2(acc[m][j][half * 2], acc[m][j][half * 2 + 1]));
  });
  __threadfence();
  __syncthreads();
  __shared__ int arrived;
  if (tid_here() == 0) {
    arrived = atomicAdd(a.counters + tile, 1);
    if (arrived == int(pb - pa)) atomicExch(a.counters + tile, 0);  // all in: zero for the next launch
  }
  __syncthreads();
  if (arrived != int(pb - pa)) return;
  __threadfence();
  // The slots are added in CTA order (the sum does not depend on timing), each
  // thread taking runs of 4 outputs rather than its mma fragments, so the reads
  // of 4 slots are in flight together with few registers: one slot at a time,
  // a tile split 16 ways spent ~12 us on 16 dependent L2 round trips.
  constexpr int kRuns = P::kRows * P::kCtaN / 4;
  for (int v = tid_here(); v < kRuns; v += P::kThreads) {
    const int r = v / (P::kCtaN / 4), c = v % (P::kCtaN / 4) * 4;
    const int64_t row = m0 + r, n = n0 + c;
    if (row >= a.M || n >= a.N) continue;  // N % 32 == 0: a run is all in or all out
    const int off = r * P::kCtaN + c;
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    auto add = [&](const float4& x) { sum.x += x.x; sum.y += x.y; sum.z += x.z; sum.w += x.w; };
    int64_t q = pa;
    for (; q + 3 <= pb; q += 4) {
      const float4 x0 = __ldcg(reinterpret_cast<const float4*>(slot_of(q) + off));
      const float4 x1 = __ldcg(reinterpret_cast<const float4*>(slot_of(q + 1) + off));
      const float4 x2 = __ldcg(reinterpret_cast<const float4*>(slot_of(q + 2) + off));
      const float4 x3 = __ldcg(reinterpret_cast<const float4*>(slot_of(q + 3) + off));
      add(x0), add(x1), add(x2), add(x3);
    }
    for (; q <= pb; ++q) add(__ldcg(reinterpret_cast<const float4*>(slot_of(q) + off)));
    store_pair<T>(a, row, n, sum.x, sum.y);
    store_pair<T>(a, row, n + 2, sum.z, sum.w);
  }
}

// kWhole: every group spans whole chunks (group_size a multiple of the chunk's
// K, per-channel included), so a group can start only at a chunk's first K
// tile. The chunk's tiles then run without a branch between them and the
// compiler interleaves their dequantization and mma's.
template <typename T, typename ScaleT, class P, bool kWhole>
__global__ void __launch_bounds__(P::kThreads, P::kMinCtas) qgemm_w4_tc_kernel(QGemmTcArgs a, Work w) {
  using St = Stage<ScaleT, P>;
  using H2 = typename Half2Of<T>::type;
  constexpr int MT = P::MT, S = P::kStages, TPC = P::kTPC;
  constexpr bool kLate = P::kLate;
  static_assert(sizeof(St) % P::kRowBytes == 0 && offsetof(St, x) % P::kRowBytes == 0, "swizzle alignment");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t smem = smem_addr(smem_raw);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t p = blockIdx.x;
  const int64_t u0 = w.begin(p);
  const int n_units = int(w.begin(p + 1) - u0);
  const int tpg = int(a.group_size / kTileK);
  const bool per_channel = a.group_size == a.K;
  const bool has_zeros = a.zeros != nullptr;
  const uint64_t policy = evict_first_policy();
  const H2 off_sym = splat<T>(Dequant<T>::kMagic + 8.f);

  Loader<T, ScaleT, P> ld;
  ld.setup();
  ld.init(a, w, int(u0 / w.chunks), int(u0 % w.chunks));
  int loaded = 0, load_slot = 0;
  wait_for_previous_grid();  // launch_early: no global access before this
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (loaded < n_units) {
      ld.load(smem + load_slot * int(sizeof(St)), policy, a.K);
      ld.advance(a, w, tpg);
      ++loaded;
      ++load_slot;
    }
    cp_async_commit();
  }
  allow_next_grid();

  // Where the math is: tile, chunk in it, K tile in its group.
  int tile = int(u0 / w.chunks);
  int chunk = int(u0 % w.chunks);
  int gtile = chunk * TPC % tpg;
  bool fresh = true;  // no group of this tile seen yet
  float acc[MT][4][4], part[kLate ? MT : 1][4][4];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][j][e] = 0.f;
#pragma unroll
  for (int m = 0; m < (kLate ? MT : 1); ++m)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) part[m][j][e] = 0.f;
  GroupParams<T> gp;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    gp.off[j] = off_sym;
    gp.scale_b[j] = off_sym;
    gp.scale_c[j] = make_float2(0.f, 0.f);
  }
  // This thread's shared-memory offsets inside a stage: its code words, and its
  // ldmatrix row of x with the swizzle's XOR term.
  const int code_off = int(offsetof(St, codes)) + (warp * TPC * 32 + lane) * 16;
  const int x_off = int(offsetof(St, x)) + (lane % 16) * P::kRowBytes;
  const int xv = (lane / 16) ^ (lane & 7);
  // K tile t's x fragments (both 16-wide steps, every m16 block) from the stage at st_addr.
  auto x_fragments = [&](uint32_t st_addr, int t, uint32_t(&af)[2][MT][4]) {
#pragma unroll
    for (int ks = 0; ks < 2; ++ks)
#pragma unroll
      for (int m = 0; m < MT; ++m)
        ldmatrix_x4(af[ks][m], st_addr + x_off + m * 16 * P::kRowBytes + (((t * 4 + ks * 2) ^ xv) << 4));
  };

  int slot = 0;
  for (int i = 0; i < n_units; ++i) {
    cp_async_wait<S - 2>();
    __syncthreads();  // unit i is visible to all; the slot of unit i - 1 is free
    if (loaded < n_units) {
      ld.load(smem + load_slot * int(sizeof(St)), policy, a.K);
      ld.advance(a, w, tpg);
      ++loaded;
      load_slot = load_slot + 1 == S ? 0 : load_slot + 1;
    }
    cp_async_commit();

    const St& st = *reinterpret_cast<const St*>(smem_raw + slot * int(sizeof(St)));
    const uint32_t st_addr = smem + slot * int(sizeof(St));
    uint32_t q[TPC][4];
#pragma unroll
    for (int t = 0; t < TPC; ++t) {
      const uint4 q4 = *reinterpret_cast<const uint4*>(reinterpret_cast<const unsigned char*>(&st) + code_off + t * 512);
      q[t][0] = q4.x, q[t][1] = q4.y, q[t][2] = q4.z, q[t][3] = q4.w;
    }
    if constexpr (kWhole) {
      // A group starts here or not at all in this chunk: set it up, then the
      // tiles' math with no branch in between.
      const bool starts = fresh || gtile == 0;
      gtile += TPC;
      if (gtile == tpg) gtile = 0;
      if (starts) {
        if constexpr (kLate) {
          if (!fresh) flush_group<MT>(acc, part, gp.scale_c);
#pragma unroll
          for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
              for (int e = 0; e < 4; ++e) part[m][j][e] = 0.f;
        }
        fresh = false;
        load_group<T, ScaleT, P>(st, 0, has_zeros, kLate, off_sym, gp);
      }
#pragma unroll
      for (int t = 0; t < TPC; ++t) {
        uint32_t af[2][MT][4];
        x_fragments(st_addr, t, af);
        if constexpr (kLate) {
          tile_math<T, MT, false>(q[t], af, gp, false, part);
        } else {
          tile_math<T, MT, false>(q[t], af, gp, !per_channel, acc);
        }
      }
    } else
#pragma unroll
    for (int t = 0; t < TPC; ++t) {
      uint32_t af[2][MT][4];
      x_fragments(st_addr, t, af);
      const bool starts = fresh || gtile == 0;
      if (++gtile == tpg) gtile = 0;
      if constexpr (kLate) {
        if (starts) {
          if (!fresh) flush_group<MT>(acc, part, gp.scale_c);
          fresh = false;
          load_group<T, ScaleT, P>(st, t, has_zeros, true, off_sym, gp);
          tile_math<T, MT, true>(q[t], af, gp, false, part);
        } else {
          tile_math<T, MT, false>(q[t], af, gp, false, part);
        }
      } else {
        if (starts) {
          fresh = false;
          load_group<T, ScaleT, P>(st, t, has_zeros, false, off_sym, gp);
        }
        tile_math<T, MT, false>(q[t], af, gp, !per_channel, acc);
      }
    }
    slot = slot + 1 == S ? 0 : slot + 1;

    if (++chunk == w.chunks || i + 1 == n_units) {
      if constexpr (kLate) {
        flush_group<MT>(acc, part, gp.scale_c);
      } else if (per_channel) {  // raw sums in acc: scale them now (the one group's scales)
        const ScaleT* sc = reinterpret_cast<const ScaleT*>(a.scales);
        const int64_t n0 = int64_t(tile / w.mblocks) * P::kCtaN;
        for_each_pair<P>(n0, a.N, [&](int m, int j, int half, int r, int c) {
          acc[m][j][half * 2] *= to_float<ScaleT>(sc[n0 + c]);
          acc[m][j][half * 2 + 1] *= to_float<ScaleT>(sc[n0 + c + 1]);
        });
      }
      finish_tile<T, P>(a, w, p, tile, acc);
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[m][j][e] = 0.f;
      ++tile;
      chunk = 0;
      gtile = 0;
      fresh = true;
    }
  }
  cp_async_wait<0>();
}

// ------------------------------------------------------------------ launch

int rows_per_cta(int64_t M) { return M <= 16 ? 16 : M <= 32 ? 32 : 64; }

template <typename T, typename ScaleT, class P>
struct Config {
  using Act = T;
  using Scale = ScaleT;
  using Shp = P;
  static constexpr int kSmem = P::kStages * int(sizeof(Stage<ScaleT, P>));
  static constexpr int kThreadsPerCta = P::kThreads;
  static constexpr auto kernel(bool whole = false) {
    return whole ? qgemm_w4_tc_kernel<T, ScaleT, P, true> : qgemm_w4_tc_kernel<T, ScaleT, P, false>;
  }
};

// Groups span whole chunks of shape P (see the kernel's kWhole).
template <class P>
bool whole_groups(const QGemmTcArgs& a) {
  return (a.group_size / kTileK) % P::kTPC == 0;
}

// Calls f(Config<...>{}) for the instantiation that serves `a`.
template <typename F>
cudaError_t visit(const QGemmTcArgs& a, F&& f) {
  auto rows = [&](auto act, auto scale) {
    using T = decltype(act);
    using S = decltype(scale);
    switch (rows_per_cta(a.M)) {
      case 16:
        if (a.K % Rows16::kChunkK == 0) return f(Config<T, S, Rows16>{});
        return f(Config<T, S, Rows16K64>{});
      case 32: return f(Config<T, S, Rows32>{});
      default:
        if (a.K % Rows64::kChunkK == 0) return f(Config<T, S, Rows64>{});
        return f(Config<T, S, Rows64K64>{});
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
  return prepare_kernel<C::kernel()>(C::kThreadsPerCta, C::kSmem, ctas_per_sm);
}

int sm_count() {
  DeviceInfo dev;
  return current_device_info(dev) == cudaSuccess ? dev.sms : 1;
}

// CTAs in one wave for `w`'s units: as many as fit on the SMs, or one per SM
// where that would leave under 16 chunks a CTA (short CTAs spend more on
// filling the pipeline and on partial sums than a second CTA per SM gains).
int64_t wave_of(const Work& w, int ctas_per_sm) {
  const int64_t full = int64_t(ctas_per_sm) * sm_count();
  return w.units < 16 * full ? sm_count() : full;
}

// The tiles and chunks of `a` for shape P, dealt to min(tiles * splits, one
// wave) CTAs.
template <class P>
Work make_work(const QGemmTcArgs& a, int ctas_per_sm) {
  Work w;
  w.mblocks = int((a.M + P::kRows - 1) / P::kRows);
  w.tiles = int(w.mblocks * ((a.N + P::kCtaN - 1) / P::kCtaN));
  w.chunks = int(a.K / P::kChunkK);
  w.units = int64_t(w.tiles) * w.chunks;
  int64_t ctas = int64_t(w.tiles) * (a.splits > 0 ? a.splits : 1);
  const int64_t wave = wave_of(w, ctas_per_sm);
  if (ctas > wave) ctas = wave;
  if (ctas > w.units) ctas = w.units;
  w.ctas = ctas > 0 ? ctas : 1;
  return w;
}

// The work of `a` (a.splits set) with the config that serves it.
Work work_of(const QGemmTcArgs& a) {
  Work w;
  visit(a, [&](auto cfg) {
    using C = decltype(cfg);
    int occupancy = 1;
    if (prepare<C>(&occupancy) != cudaSuccess) occupancy = 1;
    w = make_work<typename C::Shp>(a, occupancy);
    return cudaSuccess;
  });
  return w;
}

int64_t tile_floats(const QGemmTcArgs& a) {
  int64_t n = 0;
  visit(a, [&](auto cfg) {
    using P = typename decltype(cfg)::Shp;
    n = int64_t(P::kRows) * P::kCtaN;
    return cudaSuccess;
  });
  return n;
}

}  // namespace

bool qgemm_tc_supported(int64_t N, int64_t K, int64_t group_size) {
  return N > 0 && K > 0 && N % kStripN == 0 && K % 64 == 0 && group_size > 0 && K % group_size == 0 &&
         group_size % kTileK == 0;
}

int qgemm_tc_plan(QGemmTcArgs& a) {
  if (qgemm_wg_ok(a)) return qgemm_wg_plan(a);
  if (a.splits > 0) return a.splits;
  // One wave of CTAs (every SM gets the same share of the units), at least
  // two chunks a CTA.
  int splits = 1;
  visit(a, [&](auto cfg) {
    using C = decltype(cfg);
    using P = typename C::Shp;
    int occupancy = 1;
    if (prepare<C>(&occupancy) != cudaSuccess) occupancy = 1;
    QGemmTcArgs one = a;
    one.splits = 1;
    const Work w = make_work<P>(one, occupancy);
    const int64_t wave = wave_of(w, occupancy);
    // Whole pieces per tile when that keeps 90% of the wave busy (each CTA
    // then works on one tile only), else enough to fill the wave.
    int64_t s = wave / w.tiles;
    if (s < 1 || 10 * s * w.tiles < 9 * wave) s = (wave + w.tiles - 1) / w.tiles;
    int64_t max_s = w.chunks / 2;
    if (max_s > kMaxSplits) max_s = kMaxSplits;
    if (s > max_s) s = max_s;
    splits = int(s > 1 ? s : 1);
    return cudaSuccess;
  });
  a.splits = splits;
  return a.splits;
}

int64_t qgemm_tc_workspace(const QGemmTcArgs& a) {
  if (qgemm_wg_ok(a)) return qgemm_wg_workspace(a);
  if (qgemm_few_ok(a)) return 0;
  const Work w = work_of(a);
  if (w.ctas == w.tiles) return 0;  // one CTA per tile
  return w.ctas * 2 * tile_floats(a);
}

int64_t qgemm_tc_counters(const QGemmTcArgs& a) {
  if (qgemm_wg_ok(a)) return qgemm_wg_counters(a);
  if (qgemm_few_ok(a)) return 0;
  const Work w = work_of(a);
  return w.ctas == w.tiles ? 0 : w.tiles;
}

int qgemm_tc_cuda(const QGemmTcArgs& a, void* stream) {
  if (!qgemm_tc_supported(a.N, a.K, a.group_size) || a.splits < 1 || a.splits > kMaxSplits ||
      (a.act != GpuFloat::kF16 && a.act != GpuFloat::kBF16))
    return int(cudaErrorInvalidValue);
  if (a.M == 0) return 0;
  cudaStream_t stream_ = static_cast<cudaStream_t>(stream);
  if (qgemm_wg_ok(a)) return qgemm_wg_cuda(a, stream);
  if (qgemm_few_ok(a)) return qgemm_few_cuda(a, stream);
  return int(visit(a, [&](auto cfg) {
    using C = decltype(cfg);
    int occupancy = 1;
    if (cudaError_t e = prepare<C>(&occupancy); e != cudaSuccess) return e;
    const Work w = make_work<typename C::Shp>(a, occupancy);
    if (w.ctas != w.tiles && (a.workspace == nullptr || a.counters == nullptr)) return cudaErrorInvalidValue;
    DeviceInfo dev;
    if (cudaError_t e = current_device_info(dev); e != cudaSuccess) return e;
    const bool whole = whole_groups<typename C::Shp>(a);
    if (whole) {
      int occ = 1;
      if (cudaError_t e = prepare_kernel<C::kernel(true)>(C::kThreadsPerCta, C::kSmem, &occ); e != cudaSuccess) return e;
    }
    return launch_early(C::kernel(whole), unsigned(w.ctas), unsigned(C::kThreadsPerCta), size_t(C::kSmem), stream_, dev, a, w);
  }));
}

}  // namespace quantcore::kernels
