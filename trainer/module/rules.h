// The nn.Module rules, enforced for any model: each check turns a classic silent mistake
// into an error that names the tensor, where it is used, and the fix.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <string>
#include <utility>
#include <vector>

namespace forge::train {

// ConfigError before training when the model has no trainable parameter.
void requireTrainableParameters(const torch::nn::Module& model);

// Walks the autograd graph from `loss` (the first step's, before backward) to its leaves:
//  - a trainable tensor that reaches the loss but is not a registered parameter (layers kept
//    in a plain std::vector instead of register_module / ModuleList, or created inside
//    forward) is a ConfigError naming its shape, the operation that uses it and the fix;
//  - a registered trainable parameter that does not reach the loss is a ConfigError naming
//    it, unless `allowUnused` (distributed.allow_unused_parameters).
// Returns the names of the unreached parameters (empty unless allowUnused).
std::vector<std::string> checkAutogradGraph(const torch::nn::Module& model, const at::Tensor& loss, bool allowUnused);

// Copies of the trainable parameters, to compare after the first optimizer step.
std::vector<std::pair<std::string, at::Tensor>> snapshotParameters(const torch::nn::Module& model);
// Names of the trainable parameters that have no gradient after backward.
std::vector<std::string> parametersWithoutGradient(const torch::nn::Module& model);
// After the first optimizer step: an error naming the parameters that got no gradient;
// otherwise returns the ones that still did not change (a gradient below float precision,
// e.g. the bias of a layer followed by BatchNorm, which the normalization cancels).
std::vector<std::string> checkFirstStep(const torch::nn::Module& model,
                                        const std::vector<std::pair<std::string, at::Tensor>>& before,
                                        const std::vector<std::string>& withoutGradient);

}  // namespace forge::train
