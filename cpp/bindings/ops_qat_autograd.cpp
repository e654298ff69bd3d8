// Autograd of the QAT ops, in C++ so that a training step pays no Python per
// fake-quantized layer: qat_fake_quantize's backward is
// qat_fake_quantize_backward (straight through for x, LSQ / LSQ+ for scale and
// zero, scaled by grad_factor); fake_quantize_per_token's is the identity
// (straight through: its grid spans the row, so nothing is clipped by more
// than rounding). Both forwards call the ops below autograd through the
// dispatcher, so CPU, CUDA and the fake kernels (torch.compile) all work.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace quantcore::bindings {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_fake_quantize(const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero,
                              int64_t bits, int64_t group_size, std::optional<at::ScalarType> grid_dtype,
                              double grad_factor) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("quantcore::qat_fake_quantize", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                               int64_t, int64_t, std::optional<at::ScalarType>, double)>();
  return op.call(x, scale, zero, bits, group_size, grid_dtype, grad_factor);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_fake_quantize_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero,
    int64_t bits, int64_t group_size, std::optional<at::ScalarType> grid_dtype, double grad_factor) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("quantcore::qat_fake_quantize_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, int64_t,
              int64_t, std::optional<at::ScalarType>, double)>();
  return op.call(grad, x, scale, zero, bits, group_size, grid_dtype, grad_factor);
}

at::Tensor call_per_token(const at::Tensor& x, int64_t bits, bool symmetric) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("quantcore::fake_quantize_per_token", "")
                             .typed<at::Tensor(const at::Tensor&, int64_t, bool)>();
  return op.call(x, bits, symmetric);
}

class FakeQuantizeFunction : public torch::autograd::Function<FakeQuantizeFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const std::optional<at::Tensor>& zero, int64_t bits, int64_t group_size,
                            std::optional<at::ScalarType> grid_dtype, double grad_factor) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({x, scale, zero.value_or(at::Tensor())});
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["group_size"] = group_size;
    ctx->saved_data["grid_dtype"] = grid_dtype;
    ctx->saved_data["grad_factor"] = grad_factor;
    return call_fake_quantize(x, scale, zero, bits, group_size, grid_dtype, grad_factor);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &scale = saved[1], &zero = saved[2];
    const std::optional<at::Tensor> zero_opt = zero.defined() ? std::optional<at::Tensor>(zero) : std::nullopt;
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), {}, {}, {}, {}};
    const auto grid_dtype = ctx->saved_data["grid_dtype"].toOptional<at::ScalarType>();
    auto [gx, gs, gz] = call_fake_quantize_backward(
        grads[0].contiguous(), x, scale, zero_opt, ctx->saved_data["bits"].toInt(),
        ctx->saved_data["group_size"].toInt(), grid_dtype, ctx->saved_data["grad_factor"].toDouble());
    return {gx, gs.to(scale.scalar_type()), zero.defined() ? gz.to(zero.scalar_type()) : at::Tensor(), {}, {}, {},
            {}};
  }
};

class PerTokenFunction : public torch::autograd::Function<PerTokenFunction> {
 public:
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, int64_t bits, bool symmetric) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_per_token(x, bits, symmetric);
  }

  static variable_list backward(AutogradContext*, variable_list grads) { return {grads[0], {}, {}}; }
};

at::Tensor fake_quantize_autograd(const at::Tensor& x, const at::Tensor& scale, const std::optional<at::Tensor>& zero,
                                  int64_t bits, int64_t group_size, std::optional<at::ScalarType> grid_dtype,
                                  double grad_factor) {
  return FakeQuantizeFunction::apply(x, scale, zero, bits, group_size, grid_dtype, grad_factor);
}

at::Tensor per_token_autograd(const at::Tensor& x, int64_t bits, bool symmetric) {
  return PerTokenFunction::apply(x, bits, symmetric);
}

}  // namespace

TORCH_LIBRARY_IMPL(quantcore, Autograd, m) {
  m.impl("qat_fake_quantize", &fake_quantize_autograd);
  m.impl("fake_quantize_per_token", &per_token_autograd);
}

}  // namespace quantcore::bindings
