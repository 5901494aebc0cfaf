#include "trainer/tasks/language_model.h"

#include <torch/torch.h>

#include <cmath>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

namespace {

std::string sequenceProblem(const std::string& what, const at::Tensor& out, const at::Tensor& y) {
  if (out.dim() == 3 && y.dim() == 2 && !y.is_floating_point() && out.size(0) == y.size(0) && out.size(1) == y.size(1)) {
    return "";
  }
  return concat("the model returns shape ", dimsText(out.sizes().vec()), " and the targets are ",
                at::toString(y.scalar_type()), " ", dimsText(y.sizes().vec()), ", but ", what,
                " takes [batch, positions, vocabulary] logits and [batch, positions] next tokens (task.name: "
                "language_model)");
}

// The cross-entropy summed over every position, and the number of positions.
at::Tensor crossEntropySums(const at::Tensor& out, const data::Batch& b) {
  at::Tensor sum = torch::nn::functional::cross_entropy(
      out.reshape({-1, out.size(2)}), b.y.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  return at::stack({sum.to(at::kDouble), at::scalar_tensor(static_cast<double>(b.y.numel()), sum.options().dtype(at::kDouble))});
}

MetricSpec perToken(std::string name, std::string label, std::string help, double (*fromMean)(double)) {
  MetricSpec s;
  s.name = name;
  s.label = std::move(label);
  s.help = std::move(help);
  s.higherIsBetter = false;
  s.sums = crossEntropySums;
  // Under the cross_entropy loss (the task's default) the batch's mean loss is the mean
  // cross-entropy per position already: the sums follow from it.
  s.reusesLoss = "cross_entropy";
  s.sumsFromLoss = [](const at::Tensor& meanLoss, const data::Batch& b) {
    const double n = static_cast<double>(b.y.numel());
    return at::stack({meanLoss.to(at::kDouble) * n, at::scalar_tensor(n, meanLoss.options().dtype(at::kDouble))});
  };
  s.value = [fromMean](const std::vector<double>& t, double) { return fromMean(t[0] / std::max(1.0, t[1])); };
  s.check = [name](const at::Tensor& out, const data::Batch& b) { return sequenceProblem(name, out, b.y); };
  return s;
}

}  // namespace

MetricSpec perplexityMetric() {
  return perToken("perplexity", "ppl", "exp of the mean cross-entropy per token",
                  [](double nats) { return std::exp(nats); });
}

MetricSpec bitsPerTokenMetric() {
  return perToken("bits_per_token", "bits", "mean cross-entropy per token in bits (nats / ln 2)",
                  [](double nats) { return nats / std::log(2.0); });
}

MetricSpec tokenAccuracyMetric() {
  MetricSpec s;
  s.name = "token_accuracy";
  s.label = "tok_acc";
  s.help = "fraction of positions whose highest logit is the next token";
  s.percent = true;
  s.sums = [](const at::Tensor& out, const data::Batch& b) {
    return at::stack({out.argmax(2).eq(b.y).sum().to(at::kDouble),
                      at::scalar_tensor(static_cast<double>(b.y.numel()), out.options().dtype(at::kDouble))});
  };
  s.value = [](const std::vector<double>& t, double) { return t[0] / std::max(1.0, t[1]); };
  s.check = [](const at::Tensor& out, const data::Batch& b) { return sequenceProblem("token_accuracy", out, b.y); };
  return s;
}

}  // namespace forge::train
