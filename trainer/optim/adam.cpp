#include "trainer/optim/adam.h"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

namespace forge::train {
namespace {

// Adam and AdamW keep the same state under the same names; only the class differs.
template <typename Optim, typename OptimOptions, typename State>
OptimizerSpec adamFamily(const char* name, const char* help) {
  OptimizerSpec s;
  s.name = name;
  s.help = help;
  s.options
      .add<std::vector<double>>("betas", {0.9, 0.999}, "decay rates of the first and second moment estimates",
                                [](const std::vector<double>& b) {
                                  bool ok = b.size() == 2 && b[0] >= 0 && b[0] < 1 && b[1] >= 0 && b[1] < 1;
                                  return ok ? std::string() : std::string("must be two numbers in [0, 1)");
                                })
      .template add<double>("eps", 1e-8, "added to the denominator", positive());
  s.make = [](std::vector<at::Tensor> params, const OptimizerArgs& a) -> std::unique_ptr<torch::optim::Optimizer> {
    const auto& b = a.options->get<std::vector<double>>("betas");
    return std::make_unique<Optim>(
        params, OptimOptions(a.lr).betas({b[0], b[1]}).eps(a.options->get<double>("eps")).weight_decay(a.weightDecay));
  };
  s.saveState = [](const torch::optim::OptimizerParamState& state) {
    c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
    const auto& st = static_cast<const State&>(state);
    d.insert("step", at::scalar_tensor(static_cast<double>(st.step()), at::kFloat));
    d.insert("exp_avg", st.exp_avg());
    d.insert("exp_avg_sq", st.exp_avg_sq());
    return d;
  };
  s.loadState = [](const OptimizerSpec::StateReader& r) -> std::unique_ptr<torch::optim::OptimizerParamState> {
    auto st = std::make_unique<State>();
    st->step(r.step("step")).exp_avg(r.tensor("exp_avg")).exp_avg_sq(r.tensor("exp_avg_sq"));
    return st;
  };
  s.saveGroup = [](c10::impl::GenericDict& g, const OptimizerArgs& a) {
    const auto& b = a.options->get<std::vector<double>>("betas");
    c10::impl::GenericList betas(c10::AnyType::get());  // a typed list would pickle as build_doublelist
    betas.push_back(b[0]);
    betas.push_back(b[1]);
    g.insert("betas", betas);
    g.insert("eps", a.options->get<double>("eps"));
    g.insert("weight_decay", a.weightDecay);
    g.insert("amsgrad", false);
    g.insert("capturable", false);
  };
  return s;
}

}  // namespace

OptimizerSpec adamOptimizer() {
  return adamFamily<torch::optim::Adam, torch::optim::AdamOptions, torch::optim::AdamParamState>(
      "adam", "Adam; weight_decay adds an L2 term to the gradient");
}

OptimizerSpec adamwOptimizer() {
  return adamFamily<torch::optim::AdamW, torch::optim::AdamWOptions, torch::optim::AdamWParamState>(
      "adamw", "Adam with decoupled weight decay");
}

}  // namespace forge::train
