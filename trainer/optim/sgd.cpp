#include "trainer/optim/sgd.h"

#include <torch/optim/sgd.h>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

OptimizerSpec sgdOptimizer() {
  OptimizerSpec s;
  s.name = "sgd";
  s.help = "stochastic gradient descent, optionally with (Nesterov) momentum";
  s.options.add<double>("momentum", 0.0, "momentum factor", inRange(0, 1))
      .add<double>("dampening", 0.0, "dampening of the momentum", inRange(0, 1, true))
      .add<bool>("nesterov", false, "Nesterov momentum (needs momentum > 0 and dampening 0)");
  s.make = [](std::vector<at::Tensor> params, const OptimizerArgs& a) -> std::unique_ptr<torch::optim::Optimizer> {
    const Options& o = *a.options;
    if (o.get<bool>("nesterov") && !(o.get<double>("momentum") > 0 && o.get<double>("dampening") == 0)) {
      throw ConfigError(concat("config error in ", o.where("nesterov"), ": optimizer.nesterov needs momentum > 0 and "
                               "dampening 0"));
    }
    return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(a.lr)
                                                           .momentum(o.get<double>("momentum"))
                                                           .dampening(o.get<double>("dampening"))
                                                           .nesterov(o.get<bool>("nesterov"))
                                                           .weight_decay(a.weightDecay));
  };
  s.saveState = [](const torch::optim::OptimizerParamState& state) {
    c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
    const auto& st = static_cast<const torch::optim::SGDParamState&>(state);
    if (st.momentum_buffer().defined()) d.insert("momentum_buffer", st.momentum_buffer());
    return d;
  };
  s.loadState = [](const OptimizerSpec::StateReader& r) -> std::unique_ptr<torch::optim::OptimizerParamState> {
    auto st = std::make_unique<torch::optim::SGDParamState>();
    if (r.has("momentum_buffer")) st->momentum_buffer(r.tensor("momentum_buffer"));
    return st;
  };
  s.saveGroup = [](c10::impl::GenericDict& g, const OptimizerArgs& a) {
    g.insert("momentum", a.options->get<double>("momentum"));
    g.insert("dampening", a.options->get<double>("dampening"));
    g.insert("weight_decay", a.weightDecay);
    g.insert("nesterov", a.options->get<bool>("nesterov"));
  };
  return s;
}

}  // namespace forge::train
