// The configured optimizer: made from its registered spec (trainer/spec/parts.h), its state
// saved and loaded in the layout of Python's torch.optim state_dict:
//   {"state": {index: {...}}, "param_groups": [{"lr": ..., hyper-parameters..., "params": [0, 1, ...]}]}
// with indices in the order of the trainable parameters.
#pragma once

#include <ATen/core/ivalue.h>
#include <torch/optim/optimizer.h>

#include <memory>
#include <vector>

#include "trainer/spec/parts.h"

namespace forge::train {

class Optimizer {
 public:
  // `options`: the optimizer's own keys (parsed against spec.options). `noDecay` (empty, or
  // one flag per parameter): the flagged ones form a second param group with weight_decay 0
  // (when weightDecay is not 0 already), saved as Python's second group.
  Optimizer(const OptimizerSpec& spec, double lr, double weightDecay, Options options, std::vector<at::Tensor> params,
            const std::vector<bool>& noDecay = {});

  torch::optim::Optimizer& torch() { return *opt_; }
  void step() { opt_->step(); }
  void setLearningRate(double lr);
  const std::string& name() const { return spec_->name; }

  c10::IValue stateDict() const;
  // The inverse; CheckpointError when the state does not fit these parameters.
  void loadStateDict(const c10::IValue& state);

 private:
  const OptimizerSpec* spec_;
  OptimizerArgs args_;
  Options options_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<torch::optim::Optimizer> opt_;
  std::vector<double> groupDecay_;  // weight_decay of each param group
};

}  // namespace forge::train
