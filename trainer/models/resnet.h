// A CIFAR-style residual network (He et al. 2016, section 4.2) for C x H x W images:
// conv1 3x3 (width) -> bn1 -> ReLU -> layer1, layer2, layer3 (n basic blocks each; widths
// w, 2w, 4w; the first block of layer2 and layer3 halves the resolution) -> global average
// pool -> fc Linear(4w, classes). depth = 6n + 2 (8, 14, 20, 32, 44, 56, 110). A basic block
// is conv1 3x3 -> bn1 -> ReLU -> conv2 3x3 -> bn2, plus its input (through `shortcut`, a 1x1
// conv and BatchNorm, where the width or resolution changes), then ReLU. Parameter and buffer
// names match the Python class of the same structure (tests/e2e/model_twins.py), so state
// dicts interchange.
#pragma once

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "trainer/spec/parts.h"

namespace forge::train {

class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential shortcut{nullptr};  // null: the identity
};
TORCH_MODULE(BasicBlock);

class ResNet : public StagedModel {
 public:
  ResNet(std::vector<int64_t> inputShape, int64_t depth, int64_t width, int64_t classes);

  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr};
  torch::nn::Linear fc{nullptr};
};

// model.name: resnet, with input_shape, depth, width, num_classes.
ModelSpec resnetModel();

}  // namespace forge::train
