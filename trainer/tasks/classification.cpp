#include "trainer/tasks/classification.h"

#include <torch/torch.h>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

namespace {

bool integral(const at::Tensor& t) { return at::isIntegralType(t.scalar_type(), /*includeBool=*/false); }

// [batch, classes] against [batch], or [batch, positions, classes] against [batch, positions].
bool logitsFit(const at::Tensor& out, const at::Tensor& y) {
  if (!integral(y) || out.dim() != y.dim() + 1 || out.dim() < 2 || out.dim() > 3) return false;
  for (int64_t d = 0; d < y.dim(); ++d) {
    if (out.size(d) != y.size(d)) return false;
  }
  return true;
}

std::string shapes(const at::Tensor& out, const at::Tensor& y) {
  return concat("the model returns shape ", dimsText(out.sizes().vec()), " and the targets are ",
                at::toString(y.scalar_type()), " ", dimsText(y.sizes().vec()));
}

}  // namespace

LossSpec crossEntropyLoss() {
  LossSpec s;
  s.name = "cross_entropy";
  s.help = "mean cross-entropy of [batch, classes] logits against integer labels, or of [batch, positions, "
           "vocabulary] logits against [batch, positions] next tokens (per token)";
  s.loss = [](const at::Tensor& out, const data::Batch& b) {
    if (out.dim() == 3) return torch::nn::functional::cross_entropy(out.reshape({-1, out.size(2)}), b.y.reshape({-1}));
    return torch::nn::functional::cross_entropy(out, b.y);
  };
  s.check = [](const at::Tensor& out, const data::Batch& b) {
    if (logitsFit(out, b.y)) return std::string();
    return concat(shapes(out, b.y), ", but cross_entropy takes [batch, classes] logits with integer labels [batch] "
                  "(or [batch, positions, vocabulary] with [batch, positions])",
                  integral(b.y) ? "" : ": float targets are a regression's (task.name: regression, loss mse)");
  };
  return s;
}

MetricSpec accuracyMetric() {
  MetricSpec s;
  s.name = "accuracy";
  s.label = "acc";
  s.help = "fraction of samples whose highest logit is the label's";
  s.percent = true;
  s.sums = [](const at::Tensor& out, const data::Batch& b) {
    return out.argmax(1).eq(b.y).sum().to(at::kDouble).reshape({1});
  };
  s.check = [](const at::Tensor& out, const data::Batch& b) {
    if (out.dim() == 2 && logitsFit(out, b.y)) return std::string();
    return concat(shapes(out, b.y), ": accuracy compares the highest of [batch, classes] logits with one class label "
                  "per sample (token sequences: token_accuracy)");
  };
  return s;
}

MetricSpec top5AccuracyMetric() {
  MetricSpec s;
  s.name = "top5_accuracy";
  s.label = "top5";
  s.help = "fraction of samples whose label is among the 5 highest logits";
  s.percent = true;
  s.sums = [](const at::Tensor& out, const data::Batch& b) {
    at::Tensor top = std::get<1>(out.topk(std::min<int64_t>(5, out.size(1)), 1));
    return top.eq(b.y.unsqueeze(1)).any(1).sum().to(at::kDouble).reshape({1});
  };
  s.check = [](const at::Tensor& out, const data::Batch& b) {
    if (out.dim() == 2 && logitsFit(out, b.y) && out.size(1) > 5) return std::string();
    if (out.dim() == 2 && logitsFit(out, b.y)) {
      return concat("top5_accuracy needs more than 5 classes: with ", out.size(1), " it is 100% whatever the model "
                    "does (remove it from task.metrics)");
    }
    return concat(shapes(out, b.y), ": top5_accuracy takes [batch, classes] logits and one class label per sample");
  };
  return s;
}

}  // namespace forge::train
