// A dynamic loss scale, as torch.cuda.amp.GradScaler keeps one: the loss is multiplied by
// the scale before backward (so small fp16 gradients do not flush to zero), the gradients are
// divided by it after the all-reduce (GradientGuard::inspect), and after each step the scale
// is updated: halved (backoff) when the step's gradients were not finite (the guard skipped
// it on every rank alike), doubled (growth) after growth_interval finite steps in a row.
// The all-reduced gradients are identical on every rank, so every rank's scale is too,
// without a collective. Its state is the checkpoint field loss_scaler ({scale,
// growth_tracker}), so a resumed run continues with the scale it had. On with
// run.precision: fp16 (loss_scale.mode auto) or loss_scale.mode: dynamic (any precision:
// the same code then runs, and is tested, on the CPU).
#pragma once

#include <cstdint>
#include <string>

#include "trainer/engine/stateful_part.h"

namespace forge::train {

struct LossScalerOptions {
  double init = 65536;          // the first scale (a power of 2: scaling is then exact)
  int64_t growthInterval = 2000;
  double growthFactor = 2.0, backoffFactor = 0.5;
};

class LossScaler : public StatefulPart {
 public:
  explicit LossScaler(LossScalerOptions options) : options_(options), scale_(options.init) {}

  double scale() const { return scale_; }
  // After the step's verdict, on every rank alike: `finite` false when it was skipped.
  void update(bool finite);

  std::string field() const override { return "loss_scaler"; }
  c10::IValue stateDict() const override;
  void loadStateDict(const c10::IValue& state, const std::string& source) override;

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t growthTracker_ = 0;  // finite steps since the last growth or backoff
};

}  // namespace forge::train
