#include "trainer/models/mlp.h"

#include <torch/torch.h>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

Mlp::Mlp(int64_t inFeatures, int64_t hidden, int64_t outputs, double p) {
  fc1 = register_module("fc1", torch::nn::Linear(inFeatures, hidden));
  bn1 = register_module("bn1", torch::nn::BatchNorm1d(hidden));
  dropout = register_module("dropout", torch::nn::Dropout(p));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, outputs));
  addStage("flatten", [](const at::Tensor& x) { return x.flatten(1); });
  addStage("fc1", [this](const at::Tensor& x) { return fc1(x); });
  addStage("bn1", [this](const at::Tensor& x) { return bn1(x); });
  addStage("relu", [](const at::Tensor& x) { return torch::relu(x); });
  addStage("dropout", [this](const at::Tensor& x) { return dropout(x); });
  addStage("fc2", [this](const at::Tensor& x) { return fc2(x); });
}

ModelSpec mlpModel() {
  ModelSpec s;
  s.name = "mlp";
  s.help = "fc1 Linear -> bn1 BatchNorm1d -> ReLU -> dropout -> fc2 Linear, over flattened samples";
  s.options.add<int64_t>("in_features", 784, "features per sample (the product of the sample shape)", atLeast(1))
      .add<int64_t>("hidden", 256, "width of the hidden layer", atLeast(1))
      .add<int64_t>("num_classes", 10,
                    "outputs: classes (labels are checked against it), or target values per sample under task.name: "
                    "regression",
                    atLeast(1))
      .add<double>("dropout", 0.0, "dropout probability after the hidden layer", inRange(0, 1));
  s.make = [](const Options& o) {
    return wrapModel(std::make_shared<Mlp>(o.get<int64_t>("in_features"), o.get<int64_t>("hidden"),
                                           o.get<int64_t>("num_classes"), o.get<double>("dropout")));
  };
  s.checkInput = [](const std::vector<int64_t>& shape, const Options& o) {
    int64_t features = 1;
    for (int64_t d : shape) features *= d;
    if (features == o.get<int64_t>("in_features")) return std::string();
    return concat("samples have shape ", dimsText(shape), " (", features, " features) but the model takes ",
                  o.get<int64_t>("in_features"), " (model.in_features)");
  };
  return s;
}

}  // namespace forge::train
