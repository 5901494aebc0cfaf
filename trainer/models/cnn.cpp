#include "trainer/models/cnn.h"

#include <torch/torch.h>

namespace forge::train {

Cnn::Cnn(const ModelConfig& cfg) {
  const int64_t c = cfg.inputShape[0], h = cfg.inputShape[1], w = cfg.inputShape[2];
  const int64_t c1 = cfg.channels[0], c2 = cfg.channels[1];
  conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c1, 3).padding(1)));
  conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(c1, c2, 3).padding(1)));
  fc1 = register_module("fc1", torch::nn::Linear(c2 * (h / 4) * (w / 4), cfg.hidden));
  dropout = register_module("dropout", torch::nn::Dropout(cfg.dropout));
  fc2 = register_module("fc2", torch::nn::Linear(cfg.hidden, cfg.numClasses));
  std::vector<int64_t> image = {-1, c, h, w};
  addStage("reshape", [image](const at::Tensor& x) { return x.reshape(image); });
  addStage("conv1", [this](const at::Tensor& x) { return conv1(x); });
  addStage("relu1+pool1", [](const at::Tensor& x) { return torch::max_pool2d(torch::relu(x), 2); });
  addStage("conv2", [this](const at::Tensor& x) { return conv2(x); });
  addStage("relu2+pool2", [](const at::Tensor& x) { return torch::max_pool2d(torch::relu(x), 2); });
  addStage("flatten", [](const at::Tensor& x) { return x.flatten(1); });
  addStage("fc1", [this](const at::Tensor& x) { return fc1(x); });
  addStage("relu3", [](const at::Tensor& x) { return torch::relu(x); });
  addStage("dropout", [this](const at::Tensor& x) { return dropout(x); });
  addStage("fc2", [this](const at::Tensor& x) { return fc2(x); });
}

}  // namespace forge::train
