#include "qgemm.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "float_convert.h"
#include "qgemm_impl.h"
#include "qgemm_layout.h"
#include "status.h"

namespace quantcore::kernels {

namespace {

// Crossovers measured on Zen 4 (one thread, 4096 x 4096, g128). bf16
// activations: the bf16 rows kernel wins up to M = 8 (29 MAC/ns; panels 28 at
// M = 8 and behind on longer rows), panels win above (43 / 61 / 89 MAC/ns at
// M = 16 / 32 / 128). fp32 activations (3 bf16 planes): the bf16 rows kernel
// wins at M = 1, the fp32 FMA rows kernel (25 MAC/ns) up to M = 16, panels from
// M = 32 (27 / 31 MAC/ns at 32 / 128). fp16 (2 planes) sits in between.
// (The torch binding hands fp32/fp16 activations with M >= 32 to a dense fp32
// GEMM on dequantized panels instead; see cpp/bindings/ops_qlinear.cpp.)
constexpr int64_t kRowsBf16MaxM = 8;
constexpr int64_t kTilesMinM_F16 = 16;
constexpr int64_t kTilesMinM_F32 = 32;

bool at_least(Isa isa, Isa level) { return static_cast<int>(isa) >= static_cast<int>(level); }

float load_x(const void* x, DType t, int64_t idx) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(x)[idx];
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(x)[idx]);
    default: return bf16_to_f32(static_cast<const uint16_t*>(x)[idx]);
  }
}

void prepare_f32(const QGemmProblem& p, const void* x, DType t, void* ws, int64_t m0, int64_t m1) {
  const int64_t G = layout::groups(p);
  for (int64_t m = m0; m < m1; ++m) {
    float* xs = static_cast<float*>(ws) + m * p.K;
    float* xsum = static_cast<float*>(ws) + p.M * p.K + m * G;
    for (int64_t g = 0; g < G; ++g) {
      float s = 0.f;
      for (int64_t k = g * p.group_size; k < (g + 1) * p.group_size; ++k) {
        const float v = load_x(x, t, m * p.K + k);
        xs[layout::prepared_index(p, k)] = v;
        s += v;
      }
      xsum[g] = s;
    }
  }
}

void prepare_bf16(const QGemmProblem& p, const void* x, DType t, void* ws, int64_t m0, int64_t m1) {
  const int planes = layout::bf16_planes_for(t);
  *static_cast<int32_t*>(ws) = planes;  // every caller writes the same value
  uint16_t* base = reinterpret_cast<uint16_t*>(static_cast<char*>(ws) + 64);
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t k = 0; k < p.K; ++k) {
      float rest = load_x(x, t, m * p.K + k);
      const int64_t dst = layout::prepared_index(p, k);
      for (int plane = 0; plane < planes; ++plane) {
        const uint16_t h = f32_to_bf16(rest);
        base[(m * planes + plane) * p.K + dst] = h;
        rest -= bf16_to_f32(h);  // exact: the remainder has few significant bits
      }
    }
  }
}

}  // namespace

const char* qgemm_path_name(QGemmPath path) {
  switch (path) {
    case QGemmPath::kRowsF32: return "rows_f32";
    case QGemmPath::kRowsBf16: return "rows_bf16";
    case QGemmPath::kTilesBf16: return "tiles_bf16";
  }
  return "unknown";
}

void qgemm_validate(const QGemmProblem& p) {
  QC_REQUIRE(p.M >= 0 && p.N >= 0 && p.K > 0, "qgemm: sizes must be non-negative and K > 0");
  QC_REQUIRE(p.bits == 4 || p.bits == 8, "qgemm: CPU kernels support 4- and 8-bit weights");
  QC_REQUIRE(p.group_size > 0 && p.K % p.group_size == 0, "qgemm: group_size must divide K");
  QC_REQUIRE(p.bits != 4 || p.group_size % 2 == 0, "qgemm: 4-bit groups must have even size");
  QC_REQUIRE(p.qweight != nullptr && p.scales != nullptr, "qgemm: missing weight or scales");
}

bool qgemm_path_supported(const QGemmProblem& p, Isa isa, QGemmPath path, DType x_type) {
  if (!isa_supported(isa)) return false;
  switch (path) {
    case QGemmPath::kRowsF32: return true;
    case QGemmPath::kRowsBf16: return at_least(isa, Isa::kAvx512Bf16) && p.bits == 4;
    case QGemmPath::kTilesBf16: return at_least(isa, Isa::kAvx512Bf16);
  }
  return false;
}

namespace {
std::atomic<int> g_forced_path{-1};
}  // namespace

void qgemm_force_path(const std::string& name) {
  if (name.empty() || name == "auto") {
    g_forced_path.store(-1);
    return;
  }
  for (QGemmPath path : {QGemmPath::kRowsF32, QGemmPath::kRowsBf16, QGemmPath::kTilesBf16}) {
    if (name == qgemm_path_name(path)) {
      g_forced_path.store(static_cast<int>(path));
      return;
    }
  }
  throw KernelError("unknown qgemm path '" + name +
                    "'; expected auto, rows_f32, rows_bf16 or tiles_bf16");
}

QGemmPath qgemm_choose_path(const QGemmProblem& p, Isa isa, DType x_type) {
  const int forced = g_forced_path.load();
  if (forced >= 0 && qgemm_path_supported(p, isa, static_cast<QGemmPath>(forced), x_type))
    return static_cast<QGemmPath>(forced);
  const bool rows_bf16 = qgemm_path_supported(p, isa, QGemmPath::kRowsBf16, x_type);
  const bool tiles = qgemm_path_supported(p, isa, QGemmPath::kTilesBf16, x_type);
  if (x_type == DType::kBF16) {
    if (rows_bf16 && p.M <= kRowsBf16MaxM) return QGemmPath::kRowsBf16;
    // 8-bit weights have no bf16 rows kernel: their panels win from M = 2.
    if (tiles && p.M >= 2) return QGemmPath::kTilesBf16;
    return QGemmPath::kRowsF32;
  }
  if (p.M == 1 && rows_bf16) return QGemmPath::kRowsBf16;
  if (tiles && p.M >= (x_type == DType::kF16 ? kTilesMinM_F16 : kTilesMinM_F32)) return QGemmPath::kTilesBf16;
  return QGemmPath::kRowsF32;
}

size_t qgemm_workspace_bytes(const QGemmProblem& p, QGemmPath path) {
  if (layout::uses_bf16_planes(path)) return 64 + size_t(p.M) * 3 * size_t(p.K) * 2;
  return sizeof(float) * size_t(p.M) * size_t(p.K + layout::groups(p));
}

void qgemm_prepare(const QGemmProblem& p, QGemmPath path, const void* x, DType x_type,
                   void* workspace, int64_t m_begin, int64_t m_end) {
  if (layout::uses_bf16_planes(path))
    prepare_bf16(p, x, x_type, workspace, m_begin, m_end);
  else
    prepare_f32(p, x, x_type, workspace, m_begin, m_end);
}

int64_t qgemm_column_block(QGemmPath path) { return path == QGemmPath::kTilesBf16 ? 32 : 16; }

void qgemm_compute(const QGemmProblem& p, Isa isa, QGemmPath path, const void* workspace, void* y,
                   DType y_type, int64_t n_begin, int64_t n_end) {
  QC_REQUIRE(isa_supported(isa), std::string("qgemm: ISA not supported here: ") + isa_name(isa));
  switch (path) {
    case QGemmPath::kRowsBf16:
      QC_REQUIRE(at_least(isa, Isa::kAvx512Bf16) && p.bits == 4, "qgemm: rows_bf16 needs avx512_bf16, 4-bit");
      impl::qgemm_rows_bf16_avx512(p, workspace, y, y_type, n_begin, n_end);
      return;
    case QGemmPath::kTilesBf16:
      QC_REQUIRE(at_least(isa, Isa::kAvx512Bf16), "qgemm: tiles_bf16 needs avx512_bf16");
      impl::qgemm_tiles_bf16_avx512(p, workspace, y, y_type, n_begin, n_end);
      return;
    case QGemmPath::kRowsF32:
      break;
  }
  switch (isa) {
    case Isa::kScalar: impl::qgemm_rows_f32_scalar(p, workspace, y, y_type, n_begin, n_end); break;
    case Isa::kAvx2: impl::qgemm_rows_f32_avx2(p, workspace, y, y_type, n_begin, n_end); break;
    default: impl::qgemm_rows_f32_avx512(p, workspace, y, y_type, n_begin, n_end); break;
  }
}

void qgemm(const QGemmProblem& p, Isa isa, QGemmPath path, const void* x, DType x_type, void* y,
           DType y_type) {
  qgemm_validate(p);
  QC_REQUIRE(qgemm_path_supported(p, isa, path, x_type),
             std::string("qgemm: path ") + qgemm_path_name(path) + " cannot run this problem on " +
                 isa_name(isa));
  std::vector<char> ws(qgemm_workspace_bytes(p, path) + 64);
  void* aligned = ws.data() + (64 - reinterpret_cast<uintptr_t>(ws.data()) % 64) % 64;
  qgemm_prepare(p, path, x, x_type, aligned, 0, p.M);
  qgemm_compute(p, isa, path, aligned, y, y_type, 0, p.N);
}

void qgemm_reference(const QGemmProblem& p, const float* x, float* y) {
  const int64_t G = layout::groups(p);
  const int64_t rb = layout::row_bytes(p);
  const int mid = 1 << (p.bits - 1);
  for (int64_t m = 0; m < p.M; ++m) {
    for (int64_t n = 0; n < p.N; ++n) {
      double acc = p.bias ? p.bias[n] : 0.0;
      const uint8_t* row = p.qweight + n * rb;
      for (int64_t k = 0; k < p.K; ++k) {
        const int q = p.bits == 8 ? row[k] : (k & 1 ? row[k / 2] >> 4 : row[k / 2] & 0xf);
        const int64_t g = k / p.group_size;
        const int z = p.zeros ? p.zeros[n * G + g] : mid;
        acc += double(x[m * p.K + k]) * double(q - z) * double(p.scales[n * G + g]);
      }
      y[m * p.N + n] = float(acc);
    }
  }
}

}  // namespace quantcore::kernels
