#include "trainer/optim.h"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <cmath>

#include "core/error.h"

namespace forge::train {
namespace {

using c10::IValue;
using GenericDict = c10::impl::GenericDict;

GenericDict anyDict() { return GenericDict(c10::StringType::get(), c10::AnyType::get()); }

IValue pair(double a, double b) {
  c10::impl::GenericList l(c10::AnyType::get());  // a typed list would pickle as build_doublelist
  l.push_back(a);
  l.push_back(b);
  return l;
}

at::Tensor stateTensor(const GenericDict& d, const char* key, const at::Tensor& like, int64_t index) {
  auto it = d.find(key);
  if (it == d.end() || !it->value().isTensor()) {
    throw CheckpointError(concat("optimizer state of parameter ", index, " has no tensor '", key, "'"));
  }
  at::Tensor t = it->value().toTensor();
  if (t.sizes() != like.sizes()) {
    throw CheckpointError(concat("optimizer state '", key, "' of parameter ", index, " has shape ", t.sizes(),
                              ", the parameter has ", like.sizes()));
  }
  return t.to(like.options()).clone();
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(const OptimizerConfig& cfg, std::vector<at::Tensor> params) {
  if (cfg.name == "sgd") {
    return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(cfg.lr)
                                                           .momentum(cfg.momentum)
                                                           .dampening(cfg.dampening)
                                                           .nesterov(cfg.nesterov)
                                                           .weight_decay(cfg.weightDecay));
  }
  if (cfg.name == "adam") {
    return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(cfg.lr)
                                                            .betas({cfg.betas[0], cfg.betas[1]})
                                                            .eps(cfg.eps)
                                                            .weight_decay(cfg.weightDecay));
  }
  if (cfg.name == "adamw") {
    return std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(cfg.lr)
                                                             .betas({cfg.betas[0], cfg.betas[1]})
                                                             .eps(cfg.eps)
                                                             .weight_decay(cfg.weightDecay));
  }
  throw ConfigError(concat("unknown optimizer '", cfg.name, "'"));
}

void setLearningRate(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) group.options().set_lr(lr);
}

IValue optimizerStateDict(torch::optim::Optimizer& opt, const OptimizerConfig& cfg, const std::vector<at::Tensor>& params) {
  GenericDict state(c10::IntType::get(), c10::AnyType::get());
  for (size_t i = 0; i < params.size(); ++i) {
    auto it = opt.state().find(params[i].unsafeGetTensorImpl());
    if (it == opt.state().end()) continue;
    GenericDict s = anyDict();
    if (cfg.name == "sgd") {
      auto& st = static_cast<torch::optim::SGDParamState&>(*it->second);
      if (st.momentum_buffer().defined()) s.insert("momentum_buffer", st.momentum_buffer());
    } else if (cfg.name == "adam") {
      auto& st = static_cast<torch::optim::AdamParamState&>(*it->second);
      s.insert("step", at::scalar_tensor(static_cast<double>(st.step()), at::kFloat));
      s.insert("exp_avg", st.exp_avg());
      s.insert("exp_avg_sq", st.exp_avg_sq());
    } else {
      auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
      s.insert("step", at::scalar_tensor(static_cast<double>(st.step()), at::kFloat));
      s.insert("exp_avg", st.exp_avg());
      s.insert("exp_avg_sq", st.exp_avg_sq());
    }
    state.insert(static_cast<int64_t>(i), s);
  }
  GenericDict group = anyDict();
  double lr = opt.param_groups().at(0).options().get_lr();
  group.insert("lr", lr);
  if (cfg.name == "sgd") {
    group.insert("momentum", cfg.momentum);
    group.insert("dampening", cfg.dampening);
    group.insert("weight_decay", cfg.weightDecay);
    group.insert("nesterov", cfg.nesterov);
  } else {
    group.insert("betas", pair(cfg.betas[0], cfg.betas[1]));
    group.insert("eps", cfg.eps);
    group.insert("weight_decay", cfg.weightDecay);
    group.insert("amsgrad", false);
    group.insert("capturable", false);
  }
  group.insert("maximize", false);
  group.insert("foreach", IValue());
  group.insert("differentiable", false);
  group.insert("fused", IValue());
  c10::impl::GenericList indices(c10::AnyType::get());  // not build_intlist: weights_only refuses it
  for (size_t i = 0; i < params.size(); ++i) indices.push_back(static_cast<int64_t>(i));
  group.insert("params", indices);
  c10::impl::GenericList groups(c10::AnyType::get());
  groups.push_back(group);
  GenericDict out = anyDict();
  out.insert("state", state);
  out.insert("param_groups", groups);
  return out;
}

void loadOptimizerStateDict(torch::optim::Optimizer& opt, const OptimizerConfig& cfg,
                            const std::vector<at::Tensor>& params, const IValue& value) {
  if (!value.isGenericDict()) throw CheckpointError("optimizer_state_dict is not a dict");
  GenericDict d = value.toGenericDict();
  auto stateIt = d.find("state");
  if (stateIt == d.end() || !stateIt->value().isGenericDict()) {
    throw CheckpointError("optimizer_state_dict has no 'state' dict");
  }
  opt.state().clear();
  for (const auto& kv : stateIt->value().toGenericDict()) {
    int64_t i = kv.key().toInt();
    if (i < 0 || i >= static_cast<int64_t>(params.size())) {
      throw CheckpointError(concat("optimizer state names parameter ", i, " but the model has ", params.size()));
    }
    const at::Tensor& p = params[i];
    GenericDict s = kv.value().toGenericDict();
    std::unique_ptr<torch::optim::OptimizerParamState> ps;
    if (cfg.name == "sgd") {
      auto st = std::make_unique<torch::optim::SGDParamState>();
      if (s.contains("momentum_buffer")) st->momentum_buffer(stateTensor(s, "momentum_buffer", p, i));
      ps = std::move(st);
    } else {
      auto stepIt = s.find("step");
      if (stepIt == s.end()) throw CheckpointError(concat("optimizer state of parameter ", i, " has no 'step'"));
      const IValue& sv = stepIt->value();
      int64_t step = sv.isTensor() ? static_cast<int64_t>(sv.toTensor().item<double>()) : sv.toInt();
      if (cfg.name == "adam") {
        auto st = std::make_unique<torch::optim::AdamParamState>();
        st->step(step).exp_avg(stateTensor(s, "exp_avg", p, i)).exp_avg_sq(stateTensor(s, "exp_avg_sq", p, i));
        ps = std::move(st);
      } else {
        auto st = std::make_unique<torch::optim::AdamWParamState>();
        st->step(step).exp_avg(stateTensor(s, "exp_avg", p, i)).exp_avg_sq(stateTensor(s, "exp_avg_sq", p, i));
        ps = std::move(st);
      }
    }
    opt.state()[p.unsafeGetTensorImpl()] = std::move(ps);
  }
  auto groupsIt = d.find("param_groups");
  if (groupsIt != d.end() && groupsIt->value().isList() && groupsIt->value().toListRef().size() > 0) {
    GenericDict g = groupsIt->value().toListRef()[0].toGenericDict();
    auto lrIt = g.find("lr");
    if (lrIt != g.end() && lrIt->value().isDouble()) setLearningRate(opt, lrIt->value().toDouble());
  }
}

LrSchedule::LrSchedule(const ScheduleConfig& cfg, double baseLr, int64_t stepsPerEpoch, int64_t epochs)
    : cfg_(cfg), base_(baseLr), totalSteps_(std::max<int64_t>(1, stepsPerEpoch * epochs)) {}

double LrSchedule::at(int64_t globalStep, int64_t epoch) const {
  double lr = base_;
  if (cfg_.name == "step") {
    lr = base_ * std::pow(cfg_.gamma, static_cast<double>(epoch / cfg_.stepEpochs));
  } else if (cfg_.name == "cosine") {
    int64_t span = std::max<int64_t>(1, totalSteps_ - cfg_.warmupSteps);
    double t = std::clamp(static_cast<double>(globalStep - cfg_.warmupSteps) / span, 0.0, 1.0);
    lr = cfg_.minLr + (base_ - cfg_.minLr) * 0.5 * (1.0 + std::cos(M_PI * t));
  }
  if (globalStep < cfg_.warmupSteps) lr *= static_cast<double>(globalStep + 1) / cfg_.warmupSteps;
  return lr;
}

}  // namespace forge::train
