#include "trainer/optim/optimizer.h"

#include <map>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {
namespace {

using c10::IValue;
using GenericDict = c10::impl::GenericDict;

GenericDict anyDict() { return GenericDict(c10::StringType::get(), c10::AnyType::get()); }

}  // namespace

Optimizer::Optimizer(const OptimizerSpec& spec, double lr, double weightDecay, Options options,
                     std::vector<at::Tensor> params, const std::vector<bool>& noDecay)
    : spec_(&spec), options_(std::move(options)), params_(std::move(params)) {
  args_.lr = lr;
  args_.weightDecay = weightDecay;
  args_.options = &options_;
  std::vector<at::Tensor> decayed, exempt;
  for (size_t i = 0; i < params_.size(); ++i) (i < noDecay.size() && noDecay[i] ? exempt : decayed).push_back(params_[i]);
  if (exempt.empty() || weightDecay == 0) {
    opt_ = spec_->make(params_, args_);
    groupDecay_ = {weightDecay};
    return;
  }
  OptimizerArgs none = args_;
  none.weightDecay = 0;
  if (decayed.empty()) {
    opt_ = spec_->make(exempt, none);
    groupDecay_ = {0.0};
    return;
  }
  // The second group's options as the spec makes them for weight_decay 0, whatever the
  // optimizer (only its make knows its options type).
  opt_ = spec_->make(decayed, args_);
  auto zero = spec_->make(exempt, none);
  opt_->add_param_group(torch::optim::OptimizerParamGroup(exempt, zero->param_groups().at(0).options().clone()));
  groupDecay_ = {weightDecay, 0.0};
}

void Optimizer::setLearningRate(double lr) {
  for (auto& group : opt_->param_groups()) group.options().set_lr(lr);
}

IValue Optimizer::stateDict() const {
  GenericDict state(c10::IntType::get(), c10::AnyType::get());
  for (size_t i = 0; i < params_.size(); ++i) {
    auto it = opt_->state().find(params_[i].unsafeGetTensorImpl());
    if (it == opt_->state().end()) continue;
    state.insert(static_cast<int64_t>(i), spec_->saveState(*it->second));
  }
  std::map<const c10::TensorImpl*, int64_t> index;
  for (size_t i = 0; i < params_.size(); ++i) index[params_[i].unsafeGetTensorImpl()] = static_cast<int64_t>(i);
  c10::impl::GenericList groups(c10::AnyType::get());
  for (size_t g = 0; g < opt_->param_groups().size(); ++g) {
    const auto& pg = opt_->param_groups()[g];
    GenericDict group = anyDict();
    OptimizerArgs now = args_;
    now.lr = pg.options().get_lr();
    now.weightDecay = groupDecay_.at(g);
    group.insert("lr", now.lr);
    if (spec_->saveGroup) spec_->saveGroup(group, now);
    group.insert("maximize", false);
    group.insert("foreach", IValue());
    group.insert("differentiable", false);
    group.insert("fused", IValue());
    c10::impl::GenericList indices(c10::AnyType::get());  // not build_intlist: weights_only refuses it
    for (const auto& p : pg.params()) indices.push_back(index.at(p.unsafeGetTensorImpl()));
    group.insert("params", indices);
    groups.push_back(group);
  }
  GenericDict out = anyDict();
  out.insert("state", state);
  out.insert("param_groups", groups);
  return out;
}

void Optimizer::loadStateDict(const IValue& value) {
  if (!value.isGenericDict()) throw CheckpointError("optimizer_state_dict is not a dict");
  GenericDict d = value.toGenericDict();
  auto stateIt = d.find("state");
  if (stateIt == d.end() || !stateIt->value().isGenericDict()) {
    throw CheckpointError("optimizer_state_dict has no 'state' dict");
  }
  opt_->state().clear();
  for (const auto& kv : stateIt->value().toGenericDict()) {
    const int64_t i = kv.key().toInt();
    if (i < 0 || i >= static_cast<int64_t>(params_.size())) {
      throw CheckpointError(concat("optimizer state names parameter ", i, " but the model has ", params_.size()));
    }
    if (!kv.value().isGenericDict()) throw CheckpointError(concat("optimizer state of parameter ", i, " is not a dict"));
    const at::Tensor& p = params_[i];
    GenericDict s = kv.value().toGenericDict();
    OptimizerSpec::StateReader r;
    r.has = [&](const std::string& key) { return s.contains(key); };
    r.tensor = [&](const std::string& key) {
      auto it = s.find(key);
      if (it == s.end() || !it->value().isTensor()) {
        throw CheckpointError(concat("optimizer state of parameter ", i, " has no tensor '", key, "'"));
      }
      at::Tensor t = it->value().toTensor();
      if (t.sizes() != p.sizes()) {
        throw CheckpointError(concat("optimizer state '", key, "' of parameter ", i, " has shape ", t.sizes(),
                                     ", the parameter has ", p.sizes()));
      }
      return t.to(p.options()).clone();
    };
    r.step = [&](const std::string& key) -> int64_t {
      auto it = s.find(key);
      if (it == s.end()) throw CheckpointError(concat("optimizer state of parameter ", i, " has no '", key, "'"));
      const IValue& v = it->value();
      if (v.isTensor()) return static_cast<int64_t>(v.toTensor().item<double>());
      if (v.isInt()) return v.toInt();
      throw CheckpointError(concat("optimizer state '", key, "' of parameter ", i, " is not a number"));
    };
    opt_->state()[p.unsafeGetTensorImpl()] = spec_->loadState(r);
  }
  auto groupsIt = d.find("param_groups");
  if (groupsIt != d.end() && groupsIt->value().isList() && groupsIt->value().toListRef().size() > 0 &&
      groupsIt->value().toListRef()[0].isGenericDict()) {
    GenericDict g = groupsIt->value().toListRef()[0].toGenericDict();
    auto lrIt = g.find("lr");
    if (lrIt != g.end() && lrIt->value().isDouble()) setLearningRate(lrIt->value().toDouble());
  }
}

}  // namespace forge::train
