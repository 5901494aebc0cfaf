// Base of forge's models: a torch::nn::Module whose forward is a list of named stages, so
// that the trainer can run one stage at a time on a probe batch and name the layer where a
// data / model shape mismatch happens.
#pragma once

#include <torch/nn/module.h>

#include <functional>
#include <string>
#include <vector>

namespace forge::train {

class Model : public torch::nn::Module {
 public:
  struct Stage {
    std::string name;  // the submodule's registered name, or an op ("relu", "flatten")
    std::function<at::Tensor(const at::Tensor&)> run;
  };

  // Logits for a batch.
  at::Tensor forward(at::Tensor x) {
    for (const auto& s : stages_) x = s.run(x);
    return x;
  }

  const std::vector<Stage>& stages() const { return stages_; }

 protected:
  void addStage(std::string name, std::function<at::Tensor(const at::Tensor&)> run) {
    stages_.push_back({std::move(name), std::move(run)});
  }

 private:
  std::vector<Stage> stages_;
};

}  // namespace forge::train
