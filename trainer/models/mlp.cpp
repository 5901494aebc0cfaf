#include "trainer/models/mlp.h"

#include <torch/torch.h>

namespace forge::train {

Mlp::Mlp(const ModelConfig& cfg) {
  fc1 = register_module("fc1", torch::nn::Linear(cfg.inFeatures, cfg.hidden));
  bn1 = register_module("bn1", torch::nn::BatchNorm1d(cfg.hidden));
  dropout = register_module("dropout", torch::nn::Dropout(cfg.dropout));
  fc2 = register_module("fc2", torch::nn::Linear(cfg.hidden, cfg.numClasses));
  addStage("flatten", [](const at::Tensor& x) { return x.flatten(1); });
  addStage("fc1", [this](const at::Tensor& x) { return fc1(x); });
  addStage("bn1", [this](const at::Tensor& x) { return bn1(x); });
  addStage("relu", [](const at::Tensor& x) { return torch::relu(x); });
  addStage("dropout", [this](const at::Tensor& x) { return dropout(x); });
  addStage("fc2", [this](const at::Tensor& x) { return fc2(x); });
}

}  // namespace forge::train
