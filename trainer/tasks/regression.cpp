#include "trainer/tasks/regression.h"

#include <torch/torch.h>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

namespace {

// "" when `out` has one value per target value of the same samples.
std::string fitProblem(const std::string& what, const at::Tensor& out, const at::Tensor& y) {
  if (y.is_floating_point() && out.dim() >= 1 && y.dim() >= 1 && out.size(0) == y.size(0) && out.numel() == y.numel()) {
    return "";
  }
  return concat("the model returns shape ", dimsText(out.sizes().vec()), " and the targets are ",
                at::toString(y.scalar_type()), " ", dimsText(y.sizes().vec()), ", but ", what,
                " takes one output value per float target value",
                y.is_floating_point() ? "" : " (integer labels are classes: task.name: classification)");
}

// The output shaped as the targets, both in double (sums over millions of values).
std::pair<at::Tensor, at::Tensor> asTargets(const at::Tensor& out, const at::Tensor& y) {
  return {out.reshape(y.sizes()).to(at::kDouble), y.to(at::kDouble)};
}

LossSpec pointwiseLoss(std::string name, std::string help,
                       std::function<at::Tensor(const at::Tensor&, const at::Tensor&)> f) {
  LossSpec s;
  s.name = name;
  s.help = std::move(help);
  s.loss = [f](const at::Tensor& out, const data::Batch& b) { return f(out.reshape(b.y.sizes()), b.y.to(out.dtype())); };
  s.check = [name](const at::Tensor& out, const data::Batch& b) { return fitProblem(name, out, b.y); };
  return s;
}

}  // namespace

LossSpec mseLoss() {
  return pointwiseLoss("mse", "mean squared error of the outputs against float targets",
                       [](const at::Tensor& o, const at::Tensor& y) { return torch::nn::functional::mse_loss(o, y); });
}

LossSpec huberLoss() {
  return pointwiseLoss("huber", "Huber loss (delta 1: squared below 1, linear above) against float targets",
                       [](const at::Tensor& o, const at::Tensor& y) { return torch::nn::functional::huber_loss(o, y); });
}

namespace {

// The mean of `error(output - target)` over every target value.
MetricSpec meanErrorMetric(std::string name, std::string help, at::Tensor (*error)(const at::Tensor&)) {
  MetricSpec s;
  s.name = name;
  s.help = std::move(help);
  s.higherIsBetter = false;
  s.sums = [error](const at::Tensor& out, const data::Batch& b) {
    auto [o, y] = asTargets(out, b.y);
    return at::stack({error(o - y).sum(), at::scalar_tensor(static_cast<double>(y.numel()), o.options())});
  };
  s.value = [](const std::vector<double>& t, double) { return t[0] / std::max(1.0, t[1]); };
  s.check = [name](const at::Tensor& out, const data::Batch& b) { return fitProblem(name, out, b.y); };
  return s;
}

}  // namespace

MetricSpec mseMetric() {
  return meanErrorMetric("mse", "mean squared error over every target value",
                         [](const at::Tensor& d) { return d.square(); });
}

MetricSpec maeMetric() {
  return meanErrorMetric("mae", "mean absolute error over every target value",
                         [](const at::Tensor& d) { return d.abs(); });
}

MetricSpec r2Metric() {
  MetricSpec s;
  s.name = "r2";
  s.label = "r2";
  s.help = "coefficient of determination 1 - SSE/SST of each target value, averaged (1: perfect, 0: the mean's)";
  s.sums = [](const at::Tensor& out, const data::Batch& b) {
    auto [o, y] = asTargets(out, b.y);
    o = o.reshape({o.size(0), -1});
    y = y.reshape({y.size(0), -1});
    return at::cat({(o - y).square().sum(0), y.sum(0), y.square().sum(0)});
  };
  s.value = [](const std::vector<double>& t, double samples) {
    const size_t d = t.size() / 3;
    double total = 0;
    for (size_t j = 0; j < d; ++j) {
      const double sse = t[j], sum = t[d + j], sumSq = t[2 * d + j];
      const double sst = sumSq - sum * sum / std::max(1.0, samples);
      // Constant targets: 1 when predicted exactly, else 0 (as scikit-learn does).
      total += sst > 1e-12 * std::max(1.0, sumSq) ? 1.0 - sse / sst : (sse <= 1e-12 ? 1.0 : 0.0);
    }
    return d == 0 ? 0.0 : total / static_cast<double>(d);
  };
  s.check = [](const at::Tensor& out, const data::Batch& b) { return fitProblem("r2", out, b.y); };
  return s;
}

}  // namespace forge::train
