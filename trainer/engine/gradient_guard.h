// What happens to a step's gradients between the all-reduce and the optimizer: their global
// L2 norm is measured (the metric grad_norm), a step whose gradients are not finite is
// skipped (counted, reported, and fatal after optimizer.max_skipped_steps in a row), and
// finite ones are clipped to optimizer.clip_grad_norm as torch.nn.utils.clip_grad_norm_
// does (scaled by max_norm / (norm + 1e-6) when that is below 1).
//
// The gradients it reads are the all-reduced ones, identical on every rank: every rank
// measures the same norm, clips by the same factor and skips the same steps without a
// collective of its own. Its counters are resumable state (checkpoint field grad_guard).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "trainer/engine/stateful_part.h"

namespace forge::train {

struct GradientVerdict {
  double norm = 0;      // the global L2 norm before clipping (NaN / Inf when not finite)
  bool apply = true;    // false: skip the optimizer step (the gradients are not finite)
  bool clipped = false;
};

struct GradientGuardOptions {
  double clipNorm = 0;          // 0: no clipping
  int64_t maxSkippedSteps = 0;  // consecutive skipped steps tolerated; one more stops the run
  bool report = true;           // log skipped steps (rank 0)
};

class GradientGuard : public StatefulPart {
 public:
  // `params`: the trainable parameters, whose .grad the optimizer steps with. `diverged`:
  // throws the run's named divergence error with the given finding (called on every rank
  // alike when the limit of skipped steps is passed).
  GradientGuard(std::vector<at::Tensor> params, GradientGuardOptions options,
                std::function<void(const std::string&)> diverged);

  // After the all-reduce, before the optimizer step, on every rank alike. Reads the norm
  // back from the device (one synchronization); clips in place. `scale`: the factor the
  // gradients carry (a loss scale; 1 without one): the norm, the clip threshold and the
  // verdict are of the gradients divided by it, which are unscaled in place first.
  GradientVerdict inspect(int64_t globalStep, double scale = 1.0);

  double lastNorm() const { return lastNorm_; }
  int64_t skippedSteps() const { return skipped_; }         // over the whole run
  int64_t consecutiveSkipped() const { return consecutive_; }

  std::string field() const override { return "grad_guard"; }
  c10::IValue stateDict() const override;
  void loadStateDict(const c10::IValue& state, const std::string& source) override;

 private:
  std::vector<at::Tensor> params_;
  GradientGuardOptions options_;
  std::function<void(const std::string&)> diverged_;
  double lastNorm_ = 0;
  int64_t skipped_ = 0, consecutive_ = 0;
};

// The global L2 norm of the gradients of `params` (those that have one), as
// torch.nn.utils.clip_grad_norm_ computes it: the norm of the per-tensor norms, in fp32.
at::Tensor gradientNorm(const std::vector<at::Tensor>& params);

}  // namespace forge::train
