#include "trainer/models/model_registry.h"

#include <functional>

#include "core/error.h"
#include "trainer/config.h"
#include "trainer/models/cnn.h"
#include "trainer/models/mlp.h"

namespace forge::train {
namespace {

struct Entry {
  std::string name;
  std::vector<std::string> keys;
  std::function<std::shared_ptr<Model>(const ModelConfig&)> make;
};

template <typename M>
std::shared_ptr<Model> build(const ModelConfig& cfg) {
  return std::make_shared<M>(cfg);
}

const std::vector<Entry>& table() {
  static const std::vector<Entry> entries = {
      {"mlp", {"in_features", "hidden", "num_classes", "dropout"}, build<Mlp>},
      {"cnn", {"input_shape", "channels", "hidden", "num_classes", "dropout"}, build<Cnn>},
  };
  return entries;
}

}  // namespace

const std::vector<std::string>& modelNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& e : table()) n.push_back(e.name);
    return n;
  }();
  return names;
}

std::vector<std::string> modelKeys(const std::string& name) {
  for (const auto& e : table()) {
    if (e.name == name) return e.keys;
  }
  return {};
}

std::shared_ptr<Model> makeModel(const ModelConfig& cfg) {
  for (const auto& e : table()) {
    if (e.name == cfg.name) return e.make(cfg);
  }
  throw ConfigError(concat("unknown model '", cfg.name, "'"));
}

}  // namespace forge::train
