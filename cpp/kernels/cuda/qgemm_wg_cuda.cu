// W4A16 GEMM on Hopper warpgroup MMAs (wgmma, sm_90a), layout in qgemm_tc_cuda.h.
//
// The weights are the MMA's A operand and x^T its B (y^T = W x^T), as in the
// few-rows kernel: each warp streams its own 32-wide strip of codes from
// global memory straight into registers (ld.global.nc, a chunk of K tiles
// ahead of the math), dequantizes them with the magic-number trick and the
// group scale into A fragments, and never stages them in shared memory. The
// rows of x go through a cp.async pipeline into shared memory in the
// wgmma's 128-byte-swizzled K-major layout, with the stage's group scales and
// zeros beside them; the warpgroup's wgmma.m64nNk16 reads them from there.
// (The unswizzled "core matrix" layout it used before was 20-40% slower at
// 64-256 rows on the H100: benchmarks/RESULTS.md, twelfth session.) A
// warpgroup's four warps cover four strips (128 outputs): the two m16 halves
// of the strips are two m64 accumulators.
//
// Work: tiles of BN rows of x by 128 WG outputs, times `splits` slices of
// K. A CTA does one (tile, slice). With several slices the partial sums meet
// in one of two ways (QGemmTcArgs::cluster_sum; by default the planner picks
// the one it expects to be faster, choose_split_sum in split_k_plan.h):
//  * workspace: each CTA writes its fp32 sums to its slot, the last to arrive
//    adds the slots and writes y. Any number of waves; the last CTA's read of
//    every slot is the cost (most of the fixed cost at 16-64 rows on the H100,
//    benchmarks/RESULTS.md, thirteenth session);
//  * cluster: the slices of a tile run as one thread-block cluster and add
//    their sums in distributed shared memory, a reduce-scatter (CTA r gets
//    every slice's share r into its own shared memory, adds it and writes that
//    share of y): no global traffic, and no CTA sums alone while the others
//    have finished. Clusters must sit whole in a GPC, so fewer are resident;
//    taken by default only where the launch is one wave (up to 21% faster at
//    128-256 rows on the H100, sixteenth session).
// Both add the slices in slice order: results do not depend on timing, and
// the two agree bit for bit.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "float_types.cuh"
#include "mma_w4.cuh"
#include "qgemm_wg_cuda.h"
#include "split_k_plan.h"
#include "weight_stream.cuh"
#include "wgmma_ops.cuh"

namespace quantcore::kernels {

namespace {

constexpr int kTileK = 32;   // inputs per 16-byte code load of a lane
constexpr int kMaxSplits = 16;  // slices of K (with the cluster sum, a cluster: Hopper's largest is 16)
// What the split-K sum costs a CTA in the planner, in slots (a CTA's fp32
// partial sums): through the workspace, a slot is written and the last CTA
// to arrive reads all k back; in the cluster, every CTA receives about one
// slot's worth of other slices' pairs over DSMEM. Fitted on the H100
// (benchmarks/RESULTS.md, thirteenth and sixteenth sessions): the one-warpgroup
// tiles' fragment-order slots stream at full speed, 2 slots whatever k; the
// 128-row tiles' (output, row) slots cost 1.1 + 0.52 k (8 slices took 58.7 us
// on 4096 x 14336 at 128 rows where 6 clustered took 46.6); the cluster sum 1.
constexpr double kClusterSumSlots = 1.0;
template <class P>
constexpr double workspace_sum_slots(int64_t k) {
  return P::WG == 1 ? 2.0 : 1.1 + 0.52 * double(k);
}
// Where it beats the mma.sync GEMM (qgemm_tc_cuda.cu) on the H100
// (benchmarks/RESULTS.md, twelfth session): from 17 rows on every issue shape,
// and from 9 rows on layers of up to 2^27 weights (at 16 rows it was 2-12%
// faster on 8192 x 8192, 14336 x 4096 and 4096 x 14336, 12% slower on 28672 x 8192).
// There it is the default; elsewhere only when asked.
constexpr int64_t kAutoMinM = 17, kAutoMinMSmall = 9, kAutoSmallWeights = int64_t(1) << 27;

[[maybe_unused]] bool auto_takes(const QGemmTcArgs& a) {
  return a.M >= kAutoMinM || (a.M >= kAutoMinMSmall && a.N * a.K <= kAutoSmallWeights);
}

// BN rows of x per tile, WG warpgroups (128 WG outputs), ST K tiles a
// pipeline stage, STAGES stages, D K tiles of codes per register chunk.
template <int BN_, int WG_, int ST_, int STAGES_, int D_>
struct WgShape {
  static constexpr int BN = BN_, WG = WG_, ST = ST_, kStages = STAGES_, D = D_;
  static constexpr int kThreads = 128 * WG;
  static constexpr int kCtaN = 128 * WG;
  static constexpr int kChunks = ST * kTileK / 8;  // 16-byte pieces of one row of x in a stage
  static constexpr int64_t kSlotFloats = int64_t(BN) * kCtaN;  // a CTA's fp32 partial sums (split K)
  static constexpr int kStageBytes = ST * kTileK * (kCtaN / 2 + BN * 2);  // a stage's codes and 16-bit x
  static_assert(D % ST == 0, "a register chunk holds whole stages");
};

// x: two 64-input swizzle atoms, each BN rows of 128 bytes; row r's 16-byte
// chunk c of an atom sits at position c ^ (r % 8), as wgmma's 128-byte
// swizzle reads it. Stages start on 1024-byte boundaries (the swizzle's period).
template <typename ScaleT, class P>
struct alignas(1024) WgStage {
  uint4 x[P::kChunks / 8][P::BN][8];  // [atom][row][swizzled chunk]
  ScaleT scales[P::ST][P::kCtaN];     // each K tile's group, for the CTA's outputs
  uint8_t zeros[P::ST][P::kCtaN];
};

struct WgWork {
  int mtiles = 1, ntiles = 1, splits = 1, stages = 1;  // stages: of all K
  bool cluster = false;  // splits > 1: a tile's slices are one cluster and sum in its shared memory
  __host__ __device__ int tiles() const { return mtiles * ntiles; }
};

// The split-K reduce-scatter: a thread's BN / 2 accumulator pairs (pair p =
// (np * (BN / 8) + j) * 2 + h) are dealt to the cluster's CTAs round-robin,
// pair p to CTA p % splits. CTA r receives, from each slice q, thread tid's
// pairs r, r + splits, ... at float2 index (q * per + p / splits) * threads + tid
// of its stage memory (per = pairs a CTA gets, at most), which the main loop no
// longer needs by then.
template <class P>
constexpr int64_t reduce_bytes(int splits) {
  const int pairs = P::BN / 2, per = (pairs + splits - 1) / splits;
  return int64_t(splits) * per * P::kThreads * 8;
}

// ------------------------------------------------- cluster (DSMEM) helpers

// Every thread of every CTA of the cluster arrives; the release / acquire
// pair makes shared-memory writes before it (local or remote) visible after it.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// The address of local shared-memory address `addr` in CTA `rank` of the cluster.
__device__ __forceinline__ uint32_t cluster_map(uint32_t addr, uint32_t rank) {
  uint32_t r;
  asm("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(addr), "r"(rank));  // pure: may be combined
  return r;
}
__device__ __forceinline__ void store_cluster(uint32_t addr, float a, float b) {
  asm volatile("st.shared::cluster.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(a), "f"(b) : "memory");
}

// ------------------------------------------------------------ PTX wrappers

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from touching `v` across a wgmma wait (the MMA writes it behind its back).
__device__ __forceinline__ void fence_operand(float& v) { asm volatile("" : "+f"(v)::"memory"); }

// Shared-memory matrix descriptor of a K-major operand with the 128-byte
// swizzle: 8-row groups 1024 bytes apart (SBO); LBO is unused in this mode.
// `addr` may point 32, 64 or 96 bytes into a row (the K step inside an atom):
// the hardware applies the swizzle to the full address.
__device__ __forceinline__ uint64_t make_sw128_desc(uint32_t addr) {
  return uint64_t((addr >> 4) & 0x3FFF) | uint64_t(1) << 16 | uint64_t(1024 >> 4) << 32 | uint64_t(1) << 62;
}

// ------------------------------------------------------------------ kernel

template <typename T, typename ScaleT, class P, bool ASYM>
__global__ void __launch_bounds__(P::kThreads, 1) qgemm_w4_wg_kernel(QGemmTcArgs a, WgWork w) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using St = WgStage<ScaleT, P>;
  using H2 = typename Half2Of<T>::type;
  constexpr int BN = P::BN, ST = P::ST, S = P::kStages, D = P::D, NACC = BN / 2;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // The launch asks for 1 KiB more than the stages, so they can start on a 1 KiB boundary.
  St* stages = reinterpret_cast<St*>(smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023));
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int tile = blockIdx.x / w.splits, split = blockIdx.x % w.splits;
  const int64_t m0 = int64_t(tile % w.mtiles) * BN, n0 = int64_t(tile / w.mtiles) * P::kCtaN;
  // The last tile may reach past N (N % 32 == 0): warps past it stream no codes
  // (zeros: their A fragments are zero) and store nothing.
  const bool strip_ok = n0 + 32 * (warp + 1) <= a.N;
  const int s0 = int(int64_t(split) * w.stages / w.splits), s1 = int(int64_t(split + 1) * w.stages / w.splits);
  const int n_stages = s1 - s0, n_tiles = n_stages * ST;
  const int KT = int(a.K / kTileK);
  const int32_t* codes = a.codes + (strip_ok ? n0 / 32 + warp : 0) * int64_t(KT) * 128 + int64_t(s0) * ST * 128 + lane * 4;
  const T* x = reinterpret_cast<const T*>(a.x);

  // One stage's copies: rows of x (zeros past M), then the K tiles' scales and zeros.
  // Each thread keeps one 16-byte column of x and steps kRowStep rows per copy
  // (a multiple of 8, so its swizzled position stays put): addresses are set up once.
  static_assert(P::kThreads % P::kChunks == 0 && (P::kThreads / P::kChunks) % 8 == 0, "x copies keep their column");
  constexpr int kXPer = BN * P::kChunks / P::kThreads, kRowStep = P::kThreads / P::kChunks;
  const int x_col = tid % P::kChunks, x_row0 = tid / P::kChunks;
  const int x_rows_left = int(a.M - m0 > BN ? BN : a.M - m0) - x_row0;  // copy j is a row of x if j * kRowStep < this
  const T* x_src0 = x + (x_rows_left > 0 ? (m0 + x_row0) * a.K : 0) + int64_t(s0) * ST * kTileK + x_col * 8;
  const uint32_t x_dst0 = smem_addr(&stages[0].x[x_col / 8][x_row0][(x_col % 8) ^ (x_row0 % 8)]);
  const int tiles_per_group = int(a.group_size / kTileK);
  auto copy_stage = [&](int s) {
    St& dst = stages[s % S];
    const uint32_t xd = x_dst0 + uint32_t(s % S) * uint32_t(sizeof(St));
    const T* xs = x_src0 + int64_t(s) * ST * kTileK;
#pragma unroll
    for (int j = 0; j < kXPer; ++j) {
      const bool ok = j * kRowStep < x_rows_left;
      cp_async16(xd + j * kRowStep * 128, ok ? xs + int64_t(j) * kRowStep * a.K : x, ok);
    }
    const int kt0 = (s0 + s) * ST;
    constexpr int kSc = ST * P::kCtaN * int(sizeof(ScaleT)) / 16, kZ = ASYM ? ST * P::kCtaN / 16 : 0;
    for (int i = tid; i < kSc + kZ; i += P::kThreads) {
      if (i < kSc) {
        constexpr int per = P::kCtaN * int(sizeof(ScaleT)) / 16;
        const int tt = i / per, c = i % per;
        const int64_t grp = (kt0 + tt) / tiles_per_group;
        const bool ok = n0 + (c + 1) * (16 / int(sizeof(ScaleT))) <= a.N;
        const char* src = reinterpret_cast<const char*>(a.scales) + (grp * a.N + (ok ? n0 : 0)) * int64_t(sizeof(ScaleT));
        cp_async16(smem_addr(reinterpret_cast<char*>(dst.scales[tt]) + c * 16), src + (ok ? c * 16 : 0), ok);
      } else {
        constexpr int per = P::kCtaN / 16;
        const int tt = (i - kSc) / per, c = (i - kSc) % per;
        const int64_t grp = (kt0 + tt) / tiles_per_group;
        const bool ok = n0 + (c + 1) * 16 <= a.N;
        cp_async16(smem_addr(&dst.zeros[tt][c * 16]), a.zeros + grp * a.N + (ok ? n0 + c * 16 : 0), ok);
      }
    }
  };

  uint4 nxt[D];
  auto load_chunk = [&](int base) {
#pragma unroll
    for (int i = 0; i < D; ++i)
      nxt[i] = strip_ok && base + i < n_tiles ? load_codes_nc(codes + int64_t(base + i) * 128) : make_uint4(0, 0, 0, 0);
  };

  // The first chunk of codes streams in before the wait, x after it
  // (wait_for_previous_grid in weight_stream.cuh says why that is safe).
  load_chunk(0);
  wait_for_previous_grid();
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (s < n_stages) copy_stage(s);
    cp_async_commit();
  }
  allow_next_grid();

  float acc[2][NACC];
#pragma unroll
  for (int np = 0; np < 2; ++np)
#pragma unroll
    for (int i = 0; i < NACC; ++i) acc[np][i] = 0.f;
  const H2 off_sym = splat<T>(Dequant<T>::kMagic + 8.f);
  const int n_mine = 32 * warp + g;  // this lane's outputs: n_mine + 16 np + 8 h (CTA-relative)

  int st = 0;  // stage being computed
  for (int base = 0; base < n_tiles; base += D) {
    uint4 cur[D];
#pragma unroll
    for (int i = 0; i < D; ++i) cur[i] = nxt[i];
    load_chunk(base + D);
#pragma unroll
    for (int i = 0; i < D; ++i) {
      if (base + i >= n_tiles) break;  // n_tiles is whole stages: this is a stage boundary
      const int tt = i % ST;
      if (tt == 0) {
        // Stage st is needed and stage st - 1's slot is to be refilled (every
        // warpgroup's wgmmas on it are done: each waits for its own).
        cp_async_wait<S - 2>();
        __syncthreads();
        if (st + S - 1 < n_stages) copy_stage(st + S - 1);
        cp_async_commit();
      }
      const St& cs = stages[st % S];
      uint32_t af[2][2][4];  // [np][ks]: A fragments, scaled
      const uint32_t q[4] = {cur[i].x, cur[i].y, cur[i].z, cur[i].w};  // word 2 ks + np
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        const int nl = n_mine + 16 * np;
        const H2 s_lo = splat<T>(to_float<ScaleT>(cs.scales[tt][nl]));
        const H2 s_hi = splat<T>(to_float<ScaleT>(cs.scales[tt][nl + 8]));
        H2 off_lo = off_sym, off_hi = off_sym;
        if constexpr (ASYM) {
          off_lo = splat<T>(Dequant<T>::kMagic + float(cs.zeros[tt][nl]));
          off_hi = splat<T>(Dequant<T>::kMagic + float(cs.zeros[tt][nl + 8]));
        }
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {
          uint32_t b[4];
          Dequant<T>::run(q[2 * ks + np], off_lo, off_hi, b);
          af[np][ks][0] = as_u32(__hmul2(from_u32<H2>(b[0]), s_lo));  // row g, K 2t
          af[np][ks][1] = as_u32(__hmul2(from_u32<H2>(b[2]), s_hi));  // row g + 8, K 2t
          af[np][ks][2] = as_u32(__hmul2(from_u32<H2>(b[1]), s_lo));  // row g, K 2t + 8
          af[np][ks][3] = as_u32(__hmul2(from_u32<H2>(b[3]), s_hi));  // row g + 8, K 2t + 8
        }
      }
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) {
        const int kin = tt * kTileK + ks * 16;  // first input of this K step in the stage
        const uint32_t xs = smem_addr(&cs.x[kin / 64][0][0]) + (kin % 64) * 2;
#pragma unroll
        for (int np = 0; np < 2; ++np) Wgmma<T, BN>::run(acc[np], af[np][ks], make_sw128_desc(xs));
      }
      wgmma_commit();
      // Done before the next tile's fragments are written: ptxas serializes
      // every wgmma when their input registers change while one is in flight.
      // Other warpgroups on the SM fill this wait.
      wgmma_wait<0>();
      if (tt == ST - 1) ++st;
    }
  }
  wgmma_wait<0>();
#pragma unroll
  for (int np = 0; np < 2; ++np)
#pragma unroll
    for (int i = 0; i < NACC; ++i) fence_operand(acc[np][i]);
  cp_async_wait<0>();

  // acc[np][4 j + e]: output n0 + n_mine + 16 np + 8 (e / 2), row m0 + 8 j + 2 t + e % 2.
  auto for_each_pair = [&](auto&& f) {  // f(np, j, h, n_local, m_local): elements e = 2 h, 2 h + 1
#pragma unroll
    for (int np = 0; np < 2; ++np)
#pragma unroll
      for (int j = 0; j < BN / 8; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) f(np, j, h, n_mine + 16 * np + 8 * h, 8 * j + 2 * t);
  };
  T* y = reinterpret_cast<T*>(a.y);
  const T* bias = reinterpret_cast<const T*>(a.bias);
  auto store_pair = [&](int nl, int ml, float v0, float v1) {
    const int64_t n = n0 + nl;
    const float b = bias ? to_float<T>(bias[n]) : 0.f;
    if (m0 + ml < a.M) y[(m0 + ml) * a.N + n] = from_float<T>(v0 + b);
    if (m0 + ml + 1 < a.M) y[(m0 + ml + 1) * a.N + n] = from_float<T>(v1 + b);
  };
  auto store_all = [&]() {
    if (!strip_ok) return;
    for_each_pair([&](int np, int j, int h, int nl, int ml) {
      store_pair(nl, ml, acc[np][4 * j + 2 * h], acc[np][4 * j + 2 * h + 1]);
    });
  };
  if (w.splits == 1) {
    store_all();
    return;
  }

  if (w.cluster) {
    // This CTA is rank `split` of a cluster of w.splits (1-D clusters of
    // consecutive CTAs). First every CTA of the cluster is done with its
    // stages (its wgmmas waited for, its copies landed), then each sends its
    // pairs to their owners (reduce_bytes), then each owner adds what it got.
    const int splits = w.splits, per = (NACC + splits - 1) / splits;  // NACC = BN / 2 pairs a thread
    const uint32_t recv = smem_addr(stages);
    cluster_sync();
    {
      int owner = 0, slot = 0;  // pair p goes to CTA p % splits, at its slot p / splits
      for_each_pair([&](int np, int j, int h, int, int) {
        const uint32_t at = recv + uint32_t(((split * per + slot) * P::kThreads + tid) * 8);
        store_cluster(cluster_map(at, uint32_t(owner)), acc[np][4 * j + 2 * h], acc[np][4 * j + 2 * h + 1]);
        if (++owner == splits) owner = 0, ++slot;
      });
    }
    cluster_sync();
    if (!strip_ok) return;
    const float2* got = reinterpret_cast<const float2*>(stages);
    for (int slot = 0; slot < per; ++slot) {
      const int p = slot * splits + split;  // a pair of this CTA's share: (np, j, h) as for_each_pair counts
      if (p >= NACC) break;
      const int h = p & 1, j = (p >> 1) % (BN / 8), np = (p >> 1) / (BN / 8);
      float2 v = make_float2(0.f, 0.f);
      for (int q = 0; q < splits; ++q) {  // in slice order, as the workspace sum
        const float2 part = got[(q * per + slot) * P::kThreads + tid];
        v.x += part.x;
        v.y += part.y;
      }
      store_pair(n_mine + 16 * np + 8 * h, 8 * j + 2 * t, v.x, v.y);
    }
    return;
  }

  // Workspace: where a pair of partial sums sits in a slot. One warpgroup: in
  // fragment order (pair p of thread tid at 2 (p threads + tid)), so a warp's
  // store or load is 256 contiguous bytes; by (output, row) each touched 8
  // lines of 128 bytes, and the last CTA's sum over the slots was most of the
  // fixed cost at 16-64 rows (RESULTS.md, thirteenth and fourteenth sessions).
  // The 128-row tiles keep (output, row): they sit at 253 registers, and the
  // fragment order made them slower there.
  auto slot_at = [&](auto* slot, int np, int j, int h, int nl, int ml) {
    if constexpr (P::WG == 1)
      return slot + ((np * (BN / 8) + j) * 2 + h) * (2 * P::kThreads) + 2 * tid;
    else
      return slot + nl * BN + ml;
  };
  float* mine = a.workspace + (int64_t(tile) * w.splits + split) * P::kSlotFloats;
  for_each_pair([&](int np, int j, int h, int nl, int ml) {
    __stcg(reinterpret_cast<float2*>(slot_at(mine, np, j, h, nl, ml)),
           make_float2(acc[np][4 * j + 2 * h], acc[np][4 * j + 2 * h + 1]));
  });
  __threadfence();
  __syncthreads();
  __shared__ int arrived;
  if (tid == 0) {
    arrived = atomicAdd(a.counters + tile, 1);
    if (arrived == w.splits - 1) atomicExch(a.counters + tile, 0);  // all in: zero for the next launch
  }
  __syncthreads();
  if (arrived != w.splits - 1) return;
  __threadfence();
  for_each_pair([&](int np, int j, int h, int, int) { acc[np][4 * j + 2 * h] = acc[np][4 * j + 2 * h + 1] = 0.f; });
  for (int q = 0; q < w.splits; ++q) {  // in slice order: the sum does not depend on timing
    const float* part = a.workspace + (int64_t(tile) * w.splits + q) * P::kSlotFloats;
    for_each_pair([&](int np, int j, int h, int nl, int ml) {
      const float2 v = __ldcg(reinterpret_cast<const float2*>(slot_at(part, np, j, h, nl, ml)));
      acc[np][4 * j + 2 * h] += v.x;
      acc[np][4 * j + 2 * h + 1] += v.y;
    });
  }
  store_all();
#endif
}

// ------------------------------------------------------------------ launch

// Whether k slices' reduce-scatter fits in the stage memory (not every k
// does for the 128-row tiles: 64 pairs a thread do not divide evenly).
template <class P, typename ScaleT>
constexpr bool reduce_fits(int k) {
  return k == 1 || reduce_bytes<P>(k) <= int64_t(P::kStages) * int64_t(sizeof(WgStage<ScaleT, P>));
}

template <int BN, int WG, int ST, int STAGES, int D>
using Shp = WgShape<BN, WG, ST, STAGES, D>;

template <typename T, typename ScaleT, class P, bool ASYM>
struct Config {
  using Shape = P;
  static constexpr int kSmem = P::kStages * int(sizeof(WgStage<ScaleT, P>)) + 1024;  // + alignment slack
  static constexpr auto kernel() { return qgemm_w4_wg_kernel<T, ScaleT, P, ASYM>; }
  static constexpr bool fits(int k) { return reduce_fits<P, ScaleT>(k); }
};

// Calls f(Config<...>{}) for the instantiation that serves `a`.
template <typename F>
cudaError_t visit(const QGemmTcArgs& a, F&& f) {
  auto shapes = [&](auto act, auto scale, auto asym) {
    using T = decltype(act);
    using S = decltype(scale);
    constexpr bool A = decltype(asym)::value;
    // 16 rows: 4 K tiles of codes a register chunk (117 registers, 4 CTAs an SM)
    // was 3-5% faster than 8 (150, 3 CTAs) on the issue shapes; from 17 rows it was slower.
    if (a.M <= 16) return f(Config<T, S, Shp<16, 1, 4, 4, 4>, A>{});
    if (a.M <= 32) return f(Config<T, S, Shp<32, 1, 4, 4, 8>, A>{});
    if (a.M <= 64) return f(Config<T, S, Shp<64, 1, 4, 4, 8>, A>{});
    return f(Config<T, S, Shp<128, 2, 4, 4, 4>, A>{});
  };
  auto zeros = [&](auto act, auto scale) {
    return a.zeros ? shapes(act, scale, std::true_type{}) : shapes(act, scale, std::false_type{});
  };
  auto scales = [&](auto act) {
    switch (a.scale) {
      case GpuFloat::kF16: return zeros(act, __half{});
      case GpuFloat::kBF16: return zeros(act, __nv_bfloat16{});
      default: return zeros(act, float{});
    }
  };
  return a.act == GpuFloat::kBF16 ? scales(__nv_bfloat16{}) : scales(__half{});
}

// CTAs resident at once by split count (cluster_waves): waves[k] for clusters
// of k, waves[1] for a launch without clusters.
struct WgOccupancy {
  int64_t waves[kMaxSplits + 1] = {};
};

template <typename C>
cudaError_t prepare(WgOccupancy* occ) {
  return cluster_waves<C::kernel(), kMaxSplits>(C::Shape::kThreads, C::kSmem, occ->waves);
}

// Tiles of `a` for config C, their K slices and how the slices' partial sums
// meet. a.cluster_sum < 0 (the default) takes the sum the cost model prefers
// (choose_split_sum); 0 / 1 force the workspace / cluster sum. a.splits >= 1
// forces the count, else the planner picks it; each slice gets at least two
// stages. A forced cluster count whose reduce-scatter does not fit, or whose
// clusters cannot be resident at all, becomes the next smaller one that can run.
template <class C>
WgWork make_work(const QGemmTcArgs& a, const WgOccupancy& occ) {
  using P = typename C::Shape;
  WgWork w;
  w.mtiles = int((a.M + P::BN - 1) / P::BN);
  w.ntiles = int((a.N + P::kCtaN - 1) / P::kCtaN);
  w.stages = int(a.K / (P::ST * kTileK));
  // CTAs resident at once in clusters of k; 0 where k cannot run (its
  // clusters never fit on the GPU, its reduce-scatter not in the stages, or
  // the workspace sum is forced).
  auto cluster_wave = [&](int64_t k) -> int64_t {
    if (k == 1) return occ.waves[1];
    return a.cluster_sum != 0 && C::fits(int(k)) ? occ.waves[k] : 0;
  };
  // A CTA's fixed cost, in stages: two to fill the pipeline, plus its share of
  // the split-K sum in slots (its fp32 partial sums) over a stage's bytes.
  constexpr double kSlotPerStage = 4.0 * double(P::kSlotFloats) / P::kStageBytes;
  // One slice has no sum.
  auto ws_fixed = [](int64_t k) { return k == 1 ? 2.0 : 2.0 + kSlotPerStage * workspace_sum_slots<P>(k); };
  auto cluster_fixed = [](int64_t k) { return k == 1 ? 2.0 : 2.0 + kSlotPerStage * kClusterSumSlots; };
  const int64_t max_s = w.stages / 2 < kMaxSplits ? w.stages / 2 : kMaxSplits;
  const int64_t forced = a.splits >= 1 ? (a.splits < max_s ? a.splits : max_s) : 0;
  int64_t s = 1;
  if (a.cluster_sum == 1) {  // its own plan, several waves allowed
    s = forced >= 1 ? forced : plan_split_k(w.tiles(), w.stages, cluster_wave, max_s, cluster_fixed).k;
    while (s > 1 && cluster_wave(s) < 1) --s;
    w.cluster = true;
  } else {  // with the workspace forced no cluster can run, so this plans the workspace alone
    const SplitSumChoice c = choose_split_sum(w.tiles(), w.stages, occ.waves[1], cluster_wave, max_s, ws_fixed,
                                              cluster_fixed, forced);
    s = c.k;
    w.cluster = c.cluster;
  }
  w.splits = int(s > 1 ? s : 1);
  if (w.splits == 1) w.cluster = false;
  return w;
}

WgWork work_of(const QGemmTcArgs& a) {
  WgWork w;
  visit(a, [&](auto cfg) {
    WgOccupancy occ;
    if (prepare<decltype(cfg)>(&occ) != cudaSuccess) {  // plan for one CTA an SM, no clusters (the launch will fail)
      DeviceInfo dev;
      occ.waves[1] = current_device_info(dev) == cudaSuccess ? dev.sms : 1;
    }
    w = make_work<decltype(cfg)>(a, occ);
    return cudaSuccess;
  });
  return w;
}

int64_t slot_floats(const QGemmTcArgs& a) {
  int64_t n = 0;
  visit(a, [&](auto cfg) {
    n = decltype(cfg)::Shape::kSlotFloats;
    return cudaSuccess;
  });
  return n;
}

}  // namespace

bool qgemm_wg_built() {
#if defined(QUANTCORE_HAVE_SM90A)
  return true;
#else
  return false;
#endif
}

bool qgemm_wg_ok(const QGemmTcArgs& a) {
#if defined(QUANTCORE_HAVE_SM90A)
  DeviceInfo dev;
  if (current_device_info(dev) != cudaSuccess || dev.major != 9) return false;
  if (a.wgmma == 0 || (a.wgmma < 0 && !auto_takes(a))) return false;
  return a.M > 8 && a.N % 32 == 0 && a.K % 128 == 0 && a.group_size % kTileK == 0 && a.K % a.group_size == 0 &&
         (a.act == GpuFloat::kF16 || a.act == GpuFloat::kBF16);
#else
  (void)a;
  return false;
#endif
}

int qgemm_wg_plan(QGemmTcArgs& a) {
  // What runs comes back: the count (a forced one that cannot run steps down)
  // and the sum, so that the same arguments give the same launch.
  const WgWork w = work_of(a);
  a.splits = w.splits;
  a.cluster_sum = w.cluster ? 1 : 0;
  return a.splits;
}

int64_t qgemm_wg_workspace(const QGemmTcArgs& a) {
  const WgWork w = work_of(a);
  return w.splits > 1 && !w.cluster ? int64_t(w.tiles()) * w.splits * slot_floats(a) : 0;
}

int64_t qgemm_wg_counters(const QGemmTcArgs& a) {
  const WgWork w = work_of(a);
  return w.splits > 1 && !w.cluster ? w.tiles() : 0;
}

int qgemm_wg_cuda(const QGemmTcArgs& a, void* stream) {
  if (!qgemm_wg_ok(a) || a.splits < 1 || a.splits > kMaxSplits) return int(cudaErrorInvalidValue);
  if (a.M == 0) return 0;
  return int(visit(a, [&](auto cfg) {
    using C = decltype(cfg);
    WgOccupancy occ;
    if (cudaError_t e = prepare<C>(&occ); e != cudaSuccess) return e;
    const WgWork w = make_work<C>(a, occ);
    if (w.splits > 1 && !w.cluster && (a.workspace == nullptr || a.counters == nullptr)) return cudaErrorInvalidValue;
    DeviceInfo dev;
    if (cudaError_t e = current_device_info(dev); e != cudaSuccess) return e;
    return launch_early_clustered(C::kernel(), unsigned(w.tiles() * w.splits), unsigned(C::Shape::kThreads),
                                  size_t(C::kSmem), unsigned(w.cluster ? w.splits : 1), static_cast<cudaStream_t>(stream),
                                  dev, a, w);
  }));
}

}  // namespace quantcore::kernels
