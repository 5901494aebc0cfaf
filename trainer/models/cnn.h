// A small convolutional classifier for C x H x W images (Fashion-MNIST: 1 x 28 x 28):
// conv1 3x3 -> ReLU -> 2x2 max-pool -> conv2 3x3 -> ReLU -> 2x2 max-pool -> flatten ->
// fc1 Linear -> ReLU -> dropout -> fc2 Linear. Flat inputs are viewed as C x H x W.
#pragma once

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include "trainer/spec/parts.h"

namespace forge::train {

class Cnn : public StagedModel {
 public:
  Cnn(std::vector<int64_t> inputShape, std::vector<int64_t> channels, int64_t hidden, int64_t classes, double dropout);

  torch::nn::Conv2d conv1{nullptr};
  torch::nn::Conv2d conv2{nullptr};
  torch::nn::Linear fc1{nullptr};
  torch::nn::Dropout dropout{nullptr};
  torch::nn::Linear fc2{nullptr};
};

// model.name: cnn, with input_shape, channels, hidden, num_classes, dropout.
ModelSpec cnnModel();

// For image models' model.input_shape: the rule of its value, and "" or why samples of
// `shape` do not hold such an image (flat samples of the same size are reshaped to it).
std::function<std::string(const std::vector<int64_t>&)> imageShapeRule();
std::string imageInputProblem(const std::vector<int64_t>& shape, const Options& o);

}  // namespace forge::train
