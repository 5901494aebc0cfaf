// Models by name. Adding a model: one class (trainer/models/<name>.h/.cpp) and one line in
// model_registry.cpp's table.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace forge::train {

struct ModelConfig;
class Model;

const std::vector<std::string>& modelNames();
// The config keys (under `model:`) the named model reads, besides `name`.
std::vector<std::string> modelKeys(const std::string& name);
// Builds the model; ConfigError for an unknown name.
std::shared_ptr<Model> makeModel(const ModelConfig& cfg);

}  // namespace forge::train
