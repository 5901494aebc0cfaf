#include "trainer/engine/gradient_guard.h"

#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"

namespace forge::train {
namespace {

std::vector<at::Tensor> gradientsOf(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> grads;
  grads.reserve(params.size());
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  return grads;
}

int64_t intOf(const c10::impl::GenericDict& d, const char* key, const std::string& source) {
  auto it = d.find(key);
  if (it == d.end() || !it->value().isInt() || it->value().toInt() < 0) {
    throw CheckpointError(concat("checkpoint '", source, "': grad_guard has no count '", key, "'"));
  }
  return it->value().toInt();
}

}  // namespace

at::Tensor gradientNorm(const std::vector<at::Tensor>& params) {
  at::NoGradGuard noGrad;
  std::vector<at::Tensor> grads = gradientsOf(params);
  if (grads.empty()) return at::zeros({}, at::kFloat);
  std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);
  return at::linalg_vector_norm(at::stack(norms).to(at::kFloat), 2);
}

GradientGuard::GradientGuard(std::vector<at::Tensor> params, GradientGuardOptions options,
                             std::function<void(const std::string&)> diverged)
    : params_(std::move(params)), options_(options), diverged_(std::move(diverged)) {}

GradientVerdict GradientGuard::inspect(int64_t globalStep, double scale) {
  at::NoGradGuard noGrad;
  std::vector<at::Tensor> grads = gradientsOf(params_);
  if (scale != 1.0 && !grads.empty()) at::_foreach_mul_(grads, at::Scalar(1.0 / scale));
  GradientVerdict v;
  at::Tensor norm = gradientNorm(params_);
  v.norm = norm.item<double>();
  lastNorm_ = v.norm;
  if (!std::isfinite(v.norm)) {
    v.apply = false;
    ++skipped_;
    ++consecutive_;
    if (options_.report) {
      log::warn("train", "global step ", globalStep + 1, ": the gradients are not finite (norm ", v.norm,
                "): the step is skipped on every rank (", consecutive_, " in a row, ", skipped_, " in the run)");
    }
    if (consecutive_ > options_.maxSkippedSteps) {
      diverged_(concat("the gradients were not finite in ", consecutive_, " consecutive step(s) (more than "
                       "optimizer.max_skipped_steps = ", options_.maxSkippedSteps, ")"));
    }
    return v;
  }
  consecutive_ = 0;
  if (options_.clipNorm > 0) {
    // As clip_grad_norm_: the factor is computed in the norm's precision, on its device.
    at::Tensor coef = options_.clipNorm / (norm + 1e-6);
    if (coef.item<double>() < 1.0) {
      at::_foreach_mul_(grads, coef.to(grads.front().scalar_type()));
      v.clipped = true;
    }
  }
  return v;
}

c10::IValue GradientGuard::stateDict() const {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("skipped_steps", skipped_);
  d.insert("consecutive_skipped", consecutive_);
  d.insert("last_norm", lastNorm_);
  return d;
}

void GradientGuard::loadStateDict(const c10::IValue& state, const std::string& source) {
  if (state.isNone()) return;
  if (!state.isGenericDict()) throw CheckpointError(concat("checkpoint '", source, "': grad_guard is not a dict"));
  auto d = state.toGenericDict();
  skipped_ = intOf(d, "skipped_steps", source);
  consecutive_ = intOf(d, "consecutive_skipped", source);
  auto it = d.find("last_norm");
  if (it != d.end() && it->value().isDouble()) lastNorm_ = it->value().toDouble();
}

}  // namespace forge::train
