#include "trainer/guards.h"

#include <torch/torch.h>

#include <map>
#include <set>

#include "core/error.h"

namespace forge::train {
namespace {

std::string shapeText(at::IntArrayRef s) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < s.size(); ++i) out << (i ? ", " : "") << s[i];
  out << "]";
  return out.str();
}

std::string firstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

void requireTrainableParameters(const Model& model) {
  for (const auto& p : model.parameters()) {
    if (p.requires_grad()) return;
  }
  throw ConfigError(
      "the model has no trainable parameters: register its layers with register_module / register_parameter "
      "(and leave requires_grad on) so the optimizer has something to train");
}

void probeShapes(Model& model, const at::Tensor& x, const std::string& dataName, int64_t numClasses) {
  bool wasTraining = model.is_training();
  model.eval();
  torch::NoGradGuard noGrad;
  std::map<std::string, std::string> layers;
  for (const auto& child : model.named_children()) {
    std::ostringstream def;
    child.value()->pretty_print(def);
    layers[child.key()] = def.str();
  }
  at::Tensor cur = x;
  for (const auto& stage : model.stages()) {
    try {
      cur = stage.run(cur);
    } catch (const c10::Error& e) {
      model.train(wasTraining);
      auto it = layers.find(stage.name);
      std::string def = it == layers.end() ? "" : " " + it->second;
      throw ConfigError(concat("model and data do not fit: layer '", stage.name, "'", def, " cannot take an input of shape ",
                            shapeText(cur.sizes()), " (batch from ", dataName, ", samples of shape ",
                            shapeText(x.sizes().slice(1)), "): ", firstLine(e.what_without_backtrace())));
    }
  }
  model.train(wasTraining);
  if (cur.dim() != 2 || cur.size(1) != numClasses) {
    throw ConfigError(concat("the model returns shape ", shapeText(cur.sizes()), " but classification over ", numClasses,
                          " classes needs [batch, ", numClasses, "]"));
  }
}

std::vector<std::pair<std::string, at::Tensor>> snapshotParameters(const Model& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : model.named_parameters()) {
    if (p.value().requires_grad()) out.emplace_back(p.key(), p.value().detach().clone());
  }
  return out;
}

std::vector<std::string> parametersWithoutGradient(const Model& model) {
  std::vector<std::string> out;
  for (const auto& p : model.named_parameters()) {
    if (p.value().requires_grad() && !p.value().grad().defined()) out.push_back(p.key());
  }
  return out;
}

std::vector<std::string> checkFirstStep(const Model& model, const std::vector<std::pair<std::string, at::Tensor>>& before,
                                        const std::vector<std::string>& withoutGradient) {
  auto join = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& n : v) out += (out.empty() ? "" : ", ") + n;
    return out;
  };
  if (!withoutGradient.empty()) {
    throw ConfigError(concat("these trainable parameters got no gradient and did not change in the first step: ",
                             join(withoutGradient),
                             " (is the layer used in forward, and does its output reach the loss?)"));
  }
  auto now = model.named_parameters();
  std::vector<std::string> unchanged;
  for (const auto& [name, old] : before) {
    const at::Tensor* p = now.find(name);
    if (p != nullptr && at::equal(p->detach(), old)) unchanged.push_back(name);
  }
  return unchanged;
}

std::vector<std::pair<std::string, at::Tensor>> modelStateDict(const Model& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : model.named_parameters()) out.emplace_back(p.key(), p.value().detach());
  for (const auto& b : model.named_buffers()) out.emplace_back(b.key(), b.value().detach());
  return out;
}

void loadModelStateDict(Model& model, const std::vector<std::pair<std::string, at::Tensor>>& entries,
                        const std::string& source) {
  std::map<std::string, at::Tensor> mine;
  for (const auto& p : model.named_parameters()) mine[p.key()] = p.value();
  for (const auto& b : model.named_buffers()) mine[b.key()] = b.value();
  std::map<std::string, at::Tensor> given(entries.begin(), entries.end());
  std::vector<std::string> problems;
  for (const auto& [name, t] : mine) {
    auto it = given.find(name);
    if (it == given.end()) {
      problems.push_back("missing key '" + name + "'");
    } else if (it->second.sizes() != t.sizes()) {
      problems.push_back(concat("shape mismatch for '", name, "': checkpoint has ", shapeText(it->second.sizes()),
                             ", model has ", shapeText(t.sizes())));
    }
  }
  for (const auto& [name, t] : given) {
    if (!mine.count(name)) problems.push_back("unexpected key '" + name + "'");
  }
  if (!problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += "\n  " + p;
    throw CheckpointError(concat("the state dict in '", source, "' does not fit the model:", all));
  }
  torch::NoGradGuard noGrad;
  for (auto& [name, t] : mine) t.copy_(given.at(name));
}

}  // namespace forge::train
