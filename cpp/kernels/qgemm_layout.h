// Activation layouts shared by qgemm_prepare and the ISA-specific kernels.
//
// For 4-bit weights, byte j of a group holds codes 2j (low nibble) and 2j+1
// (high nibble). Kernels split each loaded byte vector into a low-nibble and a
// high-nibble vector, so the matching activations are stored per group as all
// even-indexed values first, then all odd-indexed ones: byte j of the group then
// pairs with xs[g*gs + j] and xs[g*gs + gs/2 + j]. 8-bit weights use x as is.
// The tiles kernel decodes weight panels in this same order, so any contiguous
// range of columns lines up between x and a panel.
//
//   F32 layout  (rows_f32):              xs  float [M][K]  then xsum float [M][G]
//   BF16 layout (rows_bf16, tiles_bf16): 64-byte header (int32 plane count P),
//                                        then planes uint16 [M][P][K]
// BF16 planes hold x as a sum of P bfloat16 terms (P = 1 for bf16 input, 2 for
// fp16, 3 for fp32), which makes every bf16 x bf16 product exact in fp32.
#pragma once

#include <cstddef>
#include <cstdint>

#include "float_convert.h"
#include "qgemm.h"

namespace quantcore::kernels::layout {

static inline bool uses_bf16_planes(QGemmPath path) {
  return path == QGemmPath::kRowsBf16 || path == QGemmPath::kTilesBf16;
}

static inline int bf16_planes_for(DType t) { return t == DType::kBF16 ? 1 : t == DType::kF16 ? 2 : 3; }

static inline int64_t groups(const QGemmProblem& p) { return p.K / p.group_size; }

static inline int64_t row_bytes(const QGemmProblem& p) { return p.K * p.bits / 8; }

// Position in a prepared row of natural column k.
static inline int64_t prepared_index(const QGemmProblem& p, int64_t k) {
  if (p.bits != 4) return k;
  const int64_t gs = p.group_size, g = k / gs, j = k % gs;
  return g * gs + (j & 1) * (gs / 2) + (j >> 1);
}

static inline const float* f32_x(const void* ws, const QGemmProblem& p, int64_t m) {
  return static_cast<const float*>(ws) + m * p.K;
}

static inline const float* f32_xsum(const void* ws, const QGemmProblem& p, int64_t m) {
  return static_cast<const float*>(ws) + p.M * p.K + m * groups(p);
}

static inline int bf16_plane_count(const void* ws) { return *static_cast<const int32_t*>(ws); }

static inline const uint16_t* bf16_plane(const void* ws, const QGemmProblem& p, int64_t m,
                                         int plane) {
  const int planes = bf16_plane_count(ws);
  const uint16_t* base = reinterpret_cast<const uint16_t*>(static_cast<const char*>(ws) + 64);
  return base + (m * planes + plane) * p.K;
}

static inline void store_y(void* y, DType t, int64_t idx, float v) {
  switch (t) {
    case DType::kF32: static_cast<float*>(y)[idx] = v; break;
    case DType::kF16: static_cast<uint16_t*>(y)[idx] = f32_to_f16(v); break;
    case DType::kBF16: static_cast<uint16_t*>(y)[idx] = f32_to_bf16(v); break;
  }
}

}  // namespace quantcore::kernels::layout
