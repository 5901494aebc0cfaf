#include "trainer/tasks/classification.h"

#include <torch/torch.h>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

LossSpec crossEntropyLoss() {
  LossSpec s;
  s.name = "cross_entropy";
  s.help = "mean cross-entropy of [batch, classes] logits against integer labels";
  s.loss = [](const at::Tensor& out, const data::Batch& b) { return torch::nn::functional::cross_entropy(out, b.y); };
  s.check = [](const at::Tensor& out, const data::Batch& b) {
    if (out.dim() == 2 && b.y.dim() == 1 && out.size(0) == b.y.size(0) && at::isIntegralType(b.y.scalar_type(), false)) {
      return std::string();
    }
    return concat("the model returns shape ", dimsText(out.sizes().vec()), " but cross_entropy over labels of shape ",
                  dimsText(b.y.sizes().vec()), " needs [batch, classes]");
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
  return s;
}

}  // namespace forge::train
