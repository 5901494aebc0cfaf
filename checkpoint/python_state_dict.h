// Reads a state dict saved by Python with torch.save(model.state_dict(), path). Python
// pickles it as a collections.OrderedDict with a _metadata attribute, which LibTorch's
// unpickler turns into None; the pickle is rewritten on the way in so that the OrderedDict
// becomes a plain dict and the attribute is dropped. Tensor data is read from the archive
// as it is.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace forge::ckpt {

// Name -> tensor, in file order. CheckpointError naming the file when it is not a torch
// archive of a {name: tensor} dict.
std::vector<std::pair<std::string, at::Tensor>> loadPythonStateDict(const std::string& path);

// The model state of a file that is either a forge checkpoint or a Python state dict.
std::vector<std::pair<std::string, at::Tensor>> loadModelState(const std::string& path);

}  // namespace forge::ckpt
