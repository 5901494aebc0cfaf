#include "trainer/tasks/kinds.h"

namespace forge::train {

const std::vector<TaskKind>& taskKinds() {
  static const std::vector<TaskKind> kinds = {
      {"classification", data::Targets::kClasses, "cross_entropy", {"accuracy"},
       "one integer class label per sample (N)"},
      {"regression", data::Targets::kValues, "mse", {"mse", "mae", "r2"},
       "float targets per sample, (N) or (N, D...)"},
      {"language_model", data::Targets::kNextTokens, "cross_entropy", {"perplexity", "bits_per_token", "token_accuracy"},
       "integer token sequences (N, L), no labels: each position predicts the next token"},
  };
  return kinds;
}

const TaskKind* findTaskKind(const std::string& name) {
  for (const auto& k : taskKinds()) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

}  // namespace forge::train
