// The nn.Module rules, enforced: each check turns a classic silent mistake into an error
// that names the layer or parameter.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "trainer/models/model.h"

namespace forge::train {

// Error before training when the model has no trainable parameter.
void requireTrainableParameters(const Model& model);

// Runs the model stage by stage on `x` (in eval mode, without gradients, restoring the
// mode afterwards). A failing stage becomes an error naming the layer, its definition, the
// input shape it got and the data it came from.
void probeShapes(Model& model, const at::Tensor& x, const std::string& dataName, int64_t numClasses);

// Copies of the trainable parameters, to compare after the first optimizer step.
std::vector<std::pair<std::string, at::Tensor>> snapshotParameters(const Model& model);
// Names of the trainable parameters that have no gradient after backward: autograd never
// reached them (a layer not used in forward, or whose output does not reach the loss).
std::vector<std::string> parametersWithoutGradient(const Model& model);
// After the first optimizer step: an error naming the parameters that got no gradient;
// otherwise returns the ones that still did not change (a gradient below float precision,
// e.g. the bias of a layer followed by BatchNorm, which the normalization cancels).
std::vector<std::string> checkFirstStep(const Model& model, const std::vector<std::pair<std::string, at::Tensor>>& before,
                                        const std::vector<std::string>& withoutGradient);

// Parameters and buffers by name, PyTorch's state_dict.
std::vector<std::pair<std::string, at::Tensor>> modelStateDict(const Model& model);
// Strict load: every model entry present, nothing extra, shapes equal; otherwise an error
// listing each missing / unexpected key and each shape mismatch by name.
void loadModelStateDict(Model& model, const std::vector<std::pair<std::string, at::Tensor>>& entries,
                        const std::string& source);

}  // namespace forge::train
