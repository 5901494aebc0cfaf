#include "trainer/module/rules.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/torch.h>

#include <map>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {
namespace {

// "AddmmBackward0" -> "addmm": the forward operation an autograd node belongs to.
std::string opOf(const std::string& node) {
  std::string op = node.substr(0, node.find("Backward"));
  for (size_t i = 0; i < op.size(); ++i) op[i] = static_cast<char>(std::tolower(op[i]));
  return op.empty() ? node : op;
}

}  // namespace

void requireTrainableParameters(const torch::nn::Module& model) {
  for (const auto& p : model.parameters()) {
    if (p.requires_grad()) return;
  }
  throw ConfigError(
      "the model has no trainable parameters: register its layers with register_module / register_parameter "
      "(and leave requires_grad on) so the optimizer has something to train");
}

std::vector<std::string> checkAutogradGraph(const torch::nn::Module& model, const at::Tensor& loss, bool allowUnused) {
  using torch::autograd::Node;
  // Every name of a tensor: a tied weight is registered under several.
  std::unordered_map<const c10::TensorImpl*, std::vector<std::string>> registered;
  for (const auto& p : model.named_parameters()) {
    if (p.value().requires_grad()) registered[p.value().unsafeGetTensorImpl()].push_back(p.key());
  }
  std::set<std::string> reached;
  struct Stray {
    std::vector<int64_t> shape;
    std::string usedBy;
  };
  std::vector<Stray> strays;
  std::set<const c10::TensorImpl*> straySeen;
  if (loss.defined() && loss.grad_fn()) {
    std::vector<Node*> todo{loss.grad_fn().get()};
    std::set<Node*> seen{loss.grad_fn().get()};
    while (!todo.empty()) {
      Node* node = todo.back();
      todo.pop_back();
      for (const auto& edge : node->next_edges()) {
        Node* next = edge.function.get();
        if (next == nullptr) continue;
        if (auto* acc = dynamic_cast<torch::autograd::AccumulateGrad*>(next)) {
          const c10::TensorImpl* impl = acc->variable.unsafeGetTensorImpl();
          auto it = registered.find(impl);
          if (it != registered.end()) {
            reached.insert(it->second.begin(), it->second.end());
          } else if (straySeen.insert(impl).second) {
            strays.push_back({acc->variable.sizes().vec(), node->name()});
          }
        }
        if (seen.insert(next).second) todo.push_back(next);
      }
    }
  }
  if (!strays.empty()) {
    std::string list;
    for (const auto& s : strays) {
      list += concat("\n  a trainable tensor of shape ", dimsText(s.shape), ", used by ", opOf(s.usedBy), " (autograd node ",
                     s.usedBy, ")");
    }
    throw ConfigError(concat(
        "the model's output depends on ", strays.size(), " trainable tensor(s) that are not registered parameters, so "
        "the optimizer would never update them and other ranks would never see them:", list,
        "\nregister every layer with register_module(\"name\", layer) (a list of layers: torch::nn::ModuleList), "
        "create layers in the constructor rather than in forward, and register loose tensors with "
        "register_parameter (or give them requires_grad(false) if they are constants)"));
  }
  std::vector<std::string> unreached;
  for (const auto& p : model.named_parameters()) {
    if (p.value().requires_grad() && !reached.count(p.key())) unreached.push_back(p.key());
  }
  if (!unreached.empty() && !allowUnused) {
    std::string list;
    for (const auto& name : unreached) {
      list += concat("\n  ", name, " ", dimsText(model.named_parameters()[name].sizes().vec()));
    }
    throw ConfigError(concat(
        "these registered trainable parameters do not reach the loss, so they would get no gradient:", list,
        "\nuse the layer in forward (is its output used?), remove it, freeze it with requires_grad(false), or, if "
        "forward skips it on purpose for some batches, set distributed.allow_unused_parameters: true"));
  }
  return unreached;
}

std::vector<std::pair<std::string, at::Tensor>> snapshotParameters(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : model.named_parameters()) {
    if (p.value().requires_grad()) out.emplace_back(p.key(), p.value().detach().clone());
  }
  return out;
}

std::vector<std::string> parametersWithoutGradient(const torch::nn::Module& model) {
  std::vector<std::string> out;
  for (const auto& p : model.named_parameters()) {
    if (p.value().requires_grad() && !p.value().grad().defined()) out.push_back(p.key());
  }
  return out;
}

std::vector<std::string> checkFirstStep(const torch::nn::Module& model,
                                        const std::vector<std::pair<std::string, at::Tensor>>& before,
                                        const std::vector<std::string>& withoutGradient) {
  if (!withoutGradient.empty()) {
    throw ConfigError(concat("these trainable parameters got no gradient and did not change in the first step: ",
                             join(withoutGradient), " (is the layer used in forward, and does its output reach the loss?)"));
  }
  auto now = model.named_parameters();
  std::vector<std::string> unchanged;
  for (const auto& [name, old] : before) {
    const at::Tensor* p = now.find(name);
    if (p != nullptr && at::equal(p->detach(), old)) unchanged.push_back(name);
  }
  return unchanged;
}

}  // namespace forge::train
