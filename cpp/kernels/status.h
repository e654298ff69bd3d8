// Error reporting for the torch-free kernels.
//
// Kernels never abort: invalid arguments throw KernelError with a message the
// binding layer turns into a Python ValueError. The kernels themselves assume
// validated inputs; these checks guard the few invariants a caller could break.
#pragma once

#include <stdexcept>
#include <string>

namespace quantcore::kernels {

class KernelError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

#define QC_REQUIRE(cond, msg)                                              \
  do {                                                                     \
    if (!(cond)) throw ::quantcore::kernels::KernelError(std::string(msg)); \
  } while (0)

}  // namespace quantcore::kernels
