#include "trainer/engine/ema.h"

#include <torch/torch.h>

#include <map>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "trainer/engine/stateful_part.h"
#include "trainer/engine/trainer.h"
#include "trainer/module/state_dict.h"

namespace forge::train {
namespace {

class WeightAverage : public LoopObserver, public StatefulPart {
 public:
  explicit WeightAverage(Trainer& t) : trainer_(t), cfg_(t.config().ema) {
    for (const auto& p : t.model().module->named_parameters(/*recurse=*/true)) {
      if (!p.value().requires_grad()) continue;
      index_[p.key()] = names_.size();
      names_.push_back(p.key());
      params_.push_back(p.value());
    }
  }

  void beforeTraining() override {
    if (!average_.empty()) return;  // resumed from a checkpoint that holds the average
    torch::NoGradGuard noGrad;
    for (const auto& p : params_) average_.push_back(p.detach().clone());
  }

  void afterStep(const StepReport& r) override {
    if (r.state.globalStep % cfg_.everySteps != 0) return;
    torch::NoGradGuard noGrad;
    std::vector<at::Tensor> weights;
    weights.reserve(params_.size());
    for (const auto& p : params_) weights.push_back(p.detach());
    at::_foreach_lerp_(average_, weights, at::Scalar(1.0 - cfg_.decay));
  }

  void afterEpoch(const EpochReport& r) override {
    if (!cfg_.evaluate) return;
    EvalResult ev;
    {
      Swap swap(*this);
      ev = trainer_.evaluateModel();
    }
    for (const auto& [k, v] : ev.values) r.extraEval.emplace_back("ema_" + k, v);
    if (trainer_.isRankZero()) {
      std::vector<std::string> parts;
      for (const auto& [k, v] : ev.values) parts.push_back(concat(k, " ", v));
      log::info("train", "epoch ", r.state.epoch, " EMA weights (decay ", cfg_.decay, "): ",
                trainer_.config().data.evalSplit, " ", join(parts, " "));
    }
  }

  std::string field() const override { return kEmaField; }

  c10::IValue stateDict() const override {
    c10::impl::GenericDict d(c10::StringType::get(), c10::TensorType::get());
    for (const auto& [name, t] : modelStateDict(*trainer_.model().module)) {
      auto it = index_.find(name);
      d.insert(name, (it != index_.end() ? average_[it->second] : t).detach().to(at::kCPU, false, true));
    }
    return d;
  }

  void loadStateDict(const c10::IValue& state, const std::string& source) override {
    if (state.isNone()) return;  // a checkpoint without an average: it starts from the weights
    if (!state.isGenericDict()) throw CheckpointError(concat("checkpoint '", source, "': ", kEmaField, " is not a dict"));
    auto d = state.toGenericDict();
    average_.clear();
    for (size_t i = 0; i < names_.size(); ++i) {
      auto it = d.find(names_[i]);
      if (it == d.end() || !it->value().isTensor() || it->value().toTensor().sizes() != params_[i].sizes()) {
        throw CheckpointError(concat("checkpoint '", source, "': ", kEmaField, " has no entry '", names_[i],
                                     "' of shape ", params_[i].sizes(), " (was the model changed?)"));
      }
      average_.push_back(it->value().toTensor().to(params_[i].options()).clone());
    }
  }

 private:
  // The averaged weights in the model while it lives, the trained ones back after.
  struct Swap {
    explicit Swap(WeightAverage& w) : w(w) { exchange(); }
    ~Swap() { exchange(); }
    void exchange() {
      torch::NoGradGuard noGrad;
      for (size_t i = 0; i < w.params_.size(); ++i) {
        at::Tensor keep = w.params_[i].detach().clone();
        w.params_[i].detach().copy_(w.average_[i]);
        w.average_[i].copy_(keep);
      }
    }
    WeightAverage& w;
  };

  Trainer& trainer_;
  EmaConfig cfg_;
  std::vector<std::string> names_;  // the trainable parameters, in the model's order
  std::map<std::string, size_t> index_;  // name -> position in names_
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> average_;
};

}  // namespace

std::unique_ptr<LoopObserver> makeWeightAverage(Trainer& t) {
  if (t.config().ema.decay <= 0) return nullptr;
  return std::make_unique<WeightAverage>(t);
}

}  // namespace forge::train
