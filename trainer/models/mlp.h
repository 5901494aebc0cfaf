// The reference classifier: fc1 Linear(in, hidden) -> bn1 BatchNorm1d(hidden) -> ReLU ->
// dropout Dropout(p) -> fc2 Linear(hidden, classes), returning logits. Parameter and buffer
// names match the Python class with the same attribute names, so state dicts interchange.
#pragma once

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include "trainer/config.h"
#include "trainer/models/model.h"

namespace forge::train {

class Mlp : public Model {
 public:
  explicit Mlp(const ModelConfig& cfg);

  torch::nn::Linear fc1{nullptr};
  torch::nn::BatchNorm1d bn1{nullptr};
  torch::nn::Dropout dropout{nullptr};
  torch::nn::Linear fc2{nullptr};
};

}  // namespace forge::train
