#include "trainer/engine/metric_sums.h"

#include <cmath>

#include <torch/torch.h>

#include "core/error.h"
#include "core/strings.h"
#include "trainer/spec/registry.h"

namespace forge::train {

std::string metricValueText(const std::string& name, double value) {
  const MetricSpec* m = registry().metrics.find(name);
  char buf[32];
  if (m != nullptr && m->percent) {
    std::snprintf(buf, sizeof buf, "%.2f%%", 100.0 * value);
  } else {
    std::snprintf(buf, sizeof buf, "%.4f", value);
  }
  return buf;
}

std::string metricLabel(const std::string& name) {
  const MetricSpec* m = registry().metrics.find(name);
  return m != nullptr && !m->label.empty() ? m->label : name;
}

Task Task::resolve(const std::string& loss, const std::vector<std::string>& metrics) {
  Task t;
  t.loss = &registry().losses.get(loss);
  for (const auto& m : metrics) t.metrics.push_back(&registry().metrics.get(m));
  return t;
}

at::Tensor Task::lossOf(const at::Tensor& output, const data::Batch& batch) const {
  at::Tensor value = loss->loss(output, batch);
  return value.dim() == 0 ? value : value.reshape({});
}

std::vector<std::string> Task::metricNames() const {
  std::vector<std::string> out;
  for (const auto* m : metrics) out.push_back(m->name);
  return out;
}

MetricSums::MetricSums(const Task& task, c10::Device device) : task_(task), device_(device) {
  lossSum_ = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
  metricSums_.resize(task.metrics.size());
}

void MetricSums::add(const at::Tensor& lossValue, const at::Tensor& output, const data::Batch& batch) {
  torch::NoGradGuard noGrad;
  const int64_t n = batch.x.size(0);
  lossSum_ += lossValue.detach() * static_cast<double>(n);
  for (size_t i = 0; i < task_.metrics.size(); ++i) {
    const MetricSpec& m = *task_.metrics[i];
    const bool fromLoss = m.sumsFromLoss && task_.loss != nullptr && m.reusesLoss == task_.loss->name;
    at::Tensor s = (fromLoss ? m.sumsFromLoss(lossValue.detach(), batch) : m.sums(output.detach(), batch))
                       .to(at::kDouble)
                       .reshape({-1});
    if (!metricSums_[i].defined()) {
      metricSums_[i] = s.clone();
    } else if (metricSums_[i].numel() != s.numel()) {
      throw Error(concat("metric ", task_.metrics[i]->name, " returned ", s.numel(), " sums for a batch after ",
                         metricSums_[i].numel(), " before: it must return the same number every batch"));
    } else {
      metricSums_[i] += s;
    }
  }
  samples_ += static_cast<double>(n);
}

std::vector<std::pair<std::string, double>> MetricSums::values(const std::vector<double>& totals, double samples) const {
  std::vector<std::pair<std::string, double>> out;
  const double n = std::max(1.0, samples);
  out.emplace_back("loss", totals[0] / n);
  size_t at = 1;
  for (size_t i = 0; i < task_.metrics.size(); ++i) {
    const MetricSpec& m = *task_.metrics[i];
    const size_t count = metricSums_[i].defined() ? static_cast<size_t>(metricSums_[i].numel()) : 0;
    std::vector<double> mine(totals.begin() + at, totals.begin() + at + count);
    at += count;
    double v = m.value ? m.value(mine, samples) : (mine.empty() ? 0.0 : mine[0] / n);
    out.emplace_back(m.name, v);
  }
  return out;
}

bool MetricSums::lossFinite() const { return std::isfinite(lossSum_.item<double>()); }

std::vector<double> MetricSums::localTotals() const {
  std::vector<at::Tensor> parts{lossSum_.reshape({1})};
  for (const auto& s : metricSums_) {
    if (s.defined()) parts.push_back(s);
  }
  at::Tensor all = at::cat(parts).cpu().contiguous();
  return std::vector<double>(all.data_ptr<double>(), all.data_ptr<double>() + all.numel());
}

std::vector<std::pair<std::string, double>> MetricSums::local() const { return values(localTotals(), samples_); }

std::vector<std::pair<std::string, double>> MetricSums::global(dist::Communicator& comm) const {
  // Every rank must contribute the same number of values for each metric. The lengths are
  // agreed first, as (longest, -shortest) over the ranks that saw a batch; a metric whose
  // length differs between ranks is the same error on every rank (none waits for the others).
  const int64_t k = static_cast<int64_t>(metricSums_.size());
  constexpr int64_t kNoBatch = int64_t{1} << 40;
  at::Tensor lengths = at::zeros({2 * k}, at::kLong);
  for (int64_t i = 0; i < k; ++i) {
    const bool have = metricSums_[i].defined();
    lengths[i] = have ? metricSums_[i].numel() : 0;
    lengths[k + i] = have ? -metricSums_[i].numel() : -kNoBatch;
  }
  comm.allReduce(lengths, dist::ReduceOp::kMax);
  std::vector<at::Tensor> parts{lossSum_.reshape({1}).cpu()};
  MetricSums sized(*this);  // values() sizes each metric by its sums: a rank without any takes the agreed sizes
  for (int64_t i = 0; i < k; ++i) {
    const int64_t longest = lengths[i].item<int64_t>(), shortest = -lengths[k + i].item<int64_t>();
    if (shortest != kNoBatch && shortest != longest) {
      throw Error(concat("metric ", task_.metrics[i]->name, " returned ", shortest, " sum(s) per batch on one rank and ",
                         longest, " on another: a metric's sums must have the same length on every rank and batch"));
    }
    if (!sized.metricSums_[i].defined()) sized.metricSums_[i] = at::zeros({longest}, at::kDouble);
    parts.push_back(sized.metricSums_[i].cpu());
  }
  parts.push_back(at::full({1}, samples_, at::kDouble));
  at::Tensor all = at::cat(parts).contiguous();
  comm.allReduce(all, dist::ReduceOp::kSum);
  std::vector<double> totals(all.data_ptr<double>(), all.data_ptr<double>() + all.numel() - 1);
  globalSamples_ = all[all.numel() - 1].item<double>();
  return sized.values(totals, globalSamples_);
}

}  // namespace forge::train
