#include "cpu_features.h"

#include <atomic>
#include <cstdlib>

#include "status.h"

namespace quantcore::kernels {

namespace {

bool cpu_has(Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return cpu_has(Isa::kAvx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq");
    case Isa::kAvx512Bf16:
      return cpu_has(Isa::kAvx512) && __builtin_cpu_supports("avx512bf16");
  }
  return false;
#else
  return isa == Isa::kScalar;
#endif
}

bool built_with(Isa isa) {
#if defined(QUANTCORE_HAVE_X86_SIMD)
  (void)isa;
  return true;
#else
  return isa == Isa::kScalar;
#endif
}

std::atomic<int> g_override{-1};

Isa isa_from_env(Isa best) {
  const char* env = std::getenv("QUANTCORE_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  Isa wanted = parse_isa(env);
  return static_cast<int>(wanted) < static_cast<int>(best) ? wanted : best;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Bf16: return "avx512_bf16";
  }
  return "unknown";
}

Isa parse_isa(const std::string& name) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    if (name == isa_name(isa)) return isa;
  }
  throw KernelError("unknown CPU ISA '" + name +
                    "'; expected one of scalar, avx2, avx512, avx512_bf16");
}

bool isa_supported(Isa isa) { return built_with(isa) && cpu_has(isa); }

Isa best_supported_isa() {
  static const Isa best = [] {
    Isa result = Isa::kScalar;
    for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
      if (isa_supported(isa)) result = isa;
    }
    return result;
  }();
  return best;
}

Isa active_isa() {
  int forced = g_override.load(std::memory_order_relaxed);
  if (forced >= 0) return static_cast<Isa>(forced);
  static const Isa from_env = isa_from_env(best_supported_isa());
  return from_env;
}

void set_isa_override(Isa isa) {
  QC_REQUIRE(isa_supported(isa),
             std::string("this CPU does not support the '") + isa_name(isa) + "' kernels");
  g_override.store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace quantcore::kernels
