// Before any training, on every rank: the model runs once on a real batch, so that data
// and model that do not fit fail with a message naming the layer, and the nn.Module rules
// that need a forward (trainer/module/rules.h) are checked on the real autograd graph.
#pragma once

#include <string>
#include <vector>

#include "data/batch_loader.h"
#include "trainer/spec/parts.h"

namespace forge::train {

// 1. A staged model runs stage by stage (eval mode, no gradients): a failing stage is named
//    with its definition and the input shape it got.
// 2. Every model then runs forward in train mode with gradients; a failure names the
//    operation, its input shapes and the parameter (and so the layer) it was using.
// 3. The loss's and each metric's own check of output against targets, then the loss, whose
//    autograd graph is walked (checkAutogradGraph).
// The model's buffers, the CPU generator and the train / eval mode are restored: the probe
// leaves no trace in training. ConfigError for every problem; `dataName` names the data.
// A module as Python's print(model) shows it, without C++ namespaces: "Linear(in_features=784, ...)".
std::string describeModule(const torch::nn::Module& m);

void probeModel(const ModelHandle& model, const data::Batch& batch, const std::string& dataName, const LossSpec& loss,
                const std::vector<const MetricSpec*>& metrics, bool allowUnusedParameters);

}  // namespace forge::train
