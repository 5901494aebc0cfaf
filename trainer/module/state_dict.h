// A model's state dict (parameters and buffers by PyTorch name) and its strict load.
#pragma once

#include <torch/nn/module.h>

#include <string>
#include <utility>
#include <vector>

namespace forge::train {

// Parameters and buffers by name, PyTorch's state_dict.
std::vector<std::pair<std::string, at::Tensor>> modelStateDict(const torch::nn::Module& model);

// Strict load: every model entry present, nothing extra, shapes equal; otherwise a
// CheckpointError listing each missing / unexpected key and each shape mismatch by name.
void loadModelStateDict(torch::nn::Module& model, const std::vector<std::pair<std::string, at::Tensor>>& entries,
                        const std::string& source);

}  // namespace forge::train
