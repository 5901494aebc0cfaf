// The reference classifier (or regressor): fc1 Linear(in, hidden) -> bn1 BatchNorm1d(hidden)
// -> ReLU -> dropout Dropout(p) -> fc2 Linear(hidden, outputs). Parameter and buffer names
// match the Python class with the same attribute names, so state dicts interchange.
#pragma once

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include "trainer/spec/parts.h"

namespace forge::train {

class Mlp : public StagedModel {
 public:
  Mlp(int64_t inFeatures, int64_t hidden, int64_t outputs, double dropout);

  torch::nn::Linear fc1{nullptr};
  torch::nn::BatchNorm1d bn1{nullptr};
  torch::nn::Dropout dropout{nullptr};
  torch::nn::Linear fc2{nullptr};
};

// model.name: mlp, with in_features, hidden, num_classes, dropout.
ModelSpec mlpModel();

}  // namespace forge::train
