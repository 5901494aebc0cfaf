// What forge trains: any torch::nn::Module. A ModelHandle holds the module and how to run it
// on a batch; wrapModel() makes one from a module whose forward takes the batch's features
// (`forward(at::Tensor)`) or the whole batch (`forward(const forge::data::Batch&)`: several
// inputs, or targets the forward needs). Residual blocks, branches and any control flow are
// the module's own business; forge only requires the nn.Module rules (trainer/module/rules.h),
// which it checks on the first step.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "data/batch_loader.h"

namespace forge {

// One named piece of a forward, for stage-by-stage shape probing.
struct Stage {
  std::string name;  // the submodule's registered name, or an op ("relu", "flatten")
  std::function<at::Tensor(const at::Tensor&)> run;
};

// Optional base for a model whose forward is a chain of named stages: forge then probes the
// shapes one stage at a time and names the stage where data and model stop fitting. Any
// other module is probed by its whole forward, and the failing operation and the parameter
// it used are named instead.
class StagedModel : public torch::nn::Module {
 public:
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

struct ModelHandle {
  std::shared_ptr<torch::nn::Module> module;
  // The model's output for a batch (logits, predictions, ...): what the loss and metrics take.
  std::function<at::Tensor(const data::Batch&)> forward;
  std::vector<Stage> stages;  // empty: the model is probed as a whole
};

namespace detail {
template <typename M, typename = void>
struct ForwardTakesTensor : std::false_type {};
template <typename M>
struct ForwardTakesTensor<M, std::void_t<decltype(std::declval<M&>().forward(std::declval<at::Tensor>()))>>
    : std::true_type {};
}  // namespace detail

template <typename M>
ModelHandle wrapModel(std::shared_ptr<M> module) {
  static_assert(std::is_base_of_v<torch::nn::Module, M>, "a forge model is a torch::nn::Module");
  ModelHandle h;
  h.module = module;
  if constexpr (detail::ForwardTakesTensor<M>::value) {
    h.forward = [m = module.get()](const data::Batch& b) -> at::Tensor { return m->forward(b.x); };
  } else {
    h.forward = [m = module.get()](const data::Batch& b) -> at::Tensor { return m->forward(b); };
  }
  if constexpr (std::is_base_of_v<StagedModel, M>) h.stages = module->stages();
  return h;
}

// A module held the LibTorch way (TORCH_MODULE(Net) -> Net wraps NetImpl).
template <typename Impl>
ModelHandle wrapModel(const torch::nn::ModuleHolder<Impl>& holder) {
  return wrapModel(holder.ptr());
}

}  // namespace forge
