// The Python extension module quantcore._C. Importing it loads this shared
// library, whose static initialisers register the torch.ops.quantcore.* ops;
// the functions below expose the CPU kernel dispatch for tests and benchmarks.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "cpu_features.h"
#include "qlinear_dispatch.h"
#include "qgemm.h"
#include "status.h"
#ifdef QUANTCORE_WITH_CUDA
#include "cuda/qgemm_wg_cuda.h"
#endif

namespace py = pybind11;
namespace k = quantcore::kernels;

PYBIND11_MODULE(_C, m) {
  m.doc() = "quantcore C++ core: kernels and torch.ops.quantcore registrations";
  py::register_exception<k::KernelError>(m, "KernelError", PyExc_ValueError);

  m.def("cpu_isa", [] { return std::string(k::isa_name(k::active_isa())); },
        "Instruction set the CPU kernels use now.");
  m.def("best_cpu_isa", [] { return std::string(k::isa_name(k::best_supported_isa())); },
        "Best instruction set this CPU supports.");
  m.def("supported_cpu_isas", [] {
    std::vector<std::string> out;
    for (k::Isa isa : {k::Isa::kScalar, k::Isa::kAvx2, k::Isa::kAvx512, k::Isa::kAvx512Bf16})
      if (k::isa_supported(isa)) out.emplace_back(k::isa_name(isa));
    return out;
  });
  m.def("set_cpu_isa", [](const std::string& name) { k::set_isa_override(k::parse_isa(name)); },
        py::arg("name"), "Force the CPU kernels to one instruction set (tests, benchmarks).");
  m.def("qgemm_path", [](int64_t M, int64_t K, int bits, int64_t group_size, const std::string& x_dtype) {
    k::QGemmProblem p;
    p.M = M;
    p.K = K;
    p.bits = bits;
    p.group_size = group_size;
    if (x_dtype != "float32" && x_dtype != "float16" && x_dtype != "bfloat16")
      throw py::value_error("x_dtype must be 'float32', 'float16' or 'bfloat16', got '" + x_dtype + "'");
    if (quantcore::bindings::qlinear_uses_dequant_mm(x_dtype, M)) return std::string("dequant_mm");
    const k::DType t = x_dtype == "bfloat16" ? k::DType::kBF16 : x_dtype == "float16" ? k::DType::kF16 : k::DType::kF32;
    return std::string(k::qgemm_path_name(k::qgemm_choose_path(p, k::active_isa(), t)));
  }, py::arg("M"), py::arg("K"), py::arg("bits"), py::arg("group_size"), py::arg("x_dtype") = "float32",
  "Path quantcore.qlinear takes for this problem on this CPU: 'dequant_mm' (dense GEMM on dequantized "
  "panels) or a fused kernel path.");
#ifdef QUANTCORE_WITH_CUDA
  m.attr("cuda_kernels") = true;
  // The Hopper wgmma GEMM (qgemm_wg_cuda.cu) is in this build: qgemm_tc takes it on sm_90 GPUs from 9 rows.
  m.attr("cuda_wgmma") = quantcore::kernels::qgemm_wg_built();
#else
  m.attr("cuda_kernels") = false;
  m.attr("cuda_wgmma") = false;
#endif
  m.def("force_qgemm_path", &quantcore::bindings::force_qlinear_path, py::arg("name"),
        "Force how quantcore.qlinear runs: 'auto', 'dequant_mm', 'rows_f32', 'rows_bf16' or 'tiles_bf16'.");
}
