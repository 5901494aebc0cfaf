#include "trainer/module/state_dict.h"

#include <torch/torch.h>

#include <map>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

std::vector<std::pair<std::string, at::Tensor>> modelStateDict(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : model.named_parameters()) out.emplace_back(p.key(), p.value().detach());
  for (const auto& b : model.named_buffers()) out.emplace_back(b.key(), b.value().detach());
  return out;
}

void loadModelStateDict(torch::nn::Module& model, const std::vector<std::pair<std::string, at::Tensor>>& entries,
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
      problems.push_back(concat("shape mismatch for '", name, "': checkpoint has ", dimsText(it->second.sizes().vec()),
                                ", model has ", dimsText(t.sizes().vec())));
    } else if (it->second.is_floating_point() && !torch::isfinite(it->second).all().item<bool>()) {
      // A model that starts from NaN trains on garbage and reports a result.
      problems.push_back(concat("'", name, "' holds non-finite values (", torch::isnan(it->second).sum().item<int64_t>(),
                                " NaN, ", torch::isinf(it->second).sum().item<int64_t>(), " Inf of ",
                                it->second.numel(), ")"));
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
