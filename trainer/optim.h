// Optimizers (sgd with momentum / nesterov / weight decay, adam, adamw), their state in
// Python torch.optim's state_dict layout, and the learning-rate schedule.
#pragma once

#include <ATen/core/ivalue.h>
#include <torch/optim/optimizer.h>

#include <memory>
#include <vector>

#include "trainer/config.h"

namespace forge::train {

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(const OptimizerConfig& cfg, std::vector<at::Tensor> params);

// {"state": {index: {...}}, "param_groups": [{hyper-parameters..., "params": [0, 1, ...]}]},
// the layout Python's optimizer.state_dict() has, indices in `params` order.
c10::IValue optimizerStateDict(torch::optim::Optimizer& opt, const OptimizerConfig& cfg,
                               const std::vector<at::Tensor>& params);
// The inverse; CheckpointError when the state does not fit these parameters.
void loadOptimizerStateDict(torch::optim::Optimizer& opt, const OptimizerConfig& cfg,
                            const std::vector<at::Tensor>& params, const c10::IValue& state);

void setLearningRate(torch::optim::Optimizer& opt, double lr);

// The learning rate as a pure function of the position in training, so a resumed run gets
// exactly the rate it would have had.
class LrSchedule {
 public:
  LrSchedule(const ScheduleConfig& cfg, double baseLr, int64_t stepsPerEpoch, int64_t epochs);
  // `globalStep` counts optimizer steps from 0; `epoch` is the 0-based epoch it falls in.
  double at(int64_t globalStep, int64_t epoch) const;

 private:
  ScheduleConfig cfg_;
  double base_;
  int64_t totalSteps_;
};

}  // namespace forge::train
