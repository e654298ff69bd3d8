// Run-time detection of the SIMD instruction sets the CPU kernels can use.
#pragma once

#include <string>

namespace quantcore::kernels {

// Kernel implementations, from most portable to most specialised. A CPU that
// supports one level supports all levels before it.
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

const char* isa_name(Isa isa);

// Highest level this CPU (and this build) supports.
Isa best_supported_isa();

bool isa_supported(Isa isa);

// Level the dispatcher uses: the best supported one, lowered by the
// QUANTCORE_CPU_ISA environment variable ("scalar", "avx2", "avx512",
// "avx512_bf16") or by set_isa_override(). Read once, cached.
Isa active_isa();

// Forces a level (for tests and benchmarks); throws KernelError if the CPU
// lacks it. Passing best_supported_isa() restores the default.
void set_isa_override(Isa isa);

// Parses "scalar" | "avx2" | "avx512" | "avx512_bf16"; throws on anything else.
Isa parse_isa(const std::string& name);

}  // namespace quantcore::kernels
