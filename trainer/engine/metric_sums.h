// The loss and the task's metrics summed over batches on the device (no host round trip per
// batch), then over ranks, then turned into values by each metric's own rule.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "distributed/communicator.h"
#include "trainer/spec/parts.h"

namespace forge::train {

// The task of a run: the loss and the metrics, resolved from the registry.
struct Task {
  const LossSpec* loss = nullptr;
  std::vector<const MetricSpec*> metrics;

  // task.loss / task.metrics by name (ConfigError for an unknown one).
  static Task resolve(const std::string& loss, const std::vector<std::string>& metrics);
  // The loss of a batch as a 0-d scalar (a loss of shape [1] or [1, 1] is accepted as one).
  at::Tensor lossOf(const at::Tensor& output, const data::Batch& batch) const;
  std::vector<std::string> metricNames() const;
};

// A value of the named metric as people read it: "89.12%" for a percent metric, else
// "0.3056" (the loss too); `label` is what the epoch line calls it ("acc").
std::string metricValueText(const std::string& name, double value);
std::string metricLabel(const std::string& name);

class MetricSums {
 public:
  MetricSums(const Task& task, c10::Device device);

  // Adds one batch: `lossValue` is the batch's mean loss, `output` the model's output (fp32).
  void add(const at::Tensor& lossValue, const at::Tensor& output, const data::Batch& batch);
  double samples() const { return samples_; }
  // Whether this rank's loss sum is finite (a NaN or Inf batch loss makes it so for good).
  // Reads the device.
  bool lossFinite() const;

  // This rank's values so far: ("loss", mean), then each metric by name. Reads the device.
  std::vector<std::pair<std::string, double>> local() const;
  // This rank's raw totals (the loss sum, then each metric's sums), for differences between
  // two moments; values() turns a difference into values.
  std::vector<double> localTotals() const;
  std::vector<std::pair<std::string, double>> values(const std::vector<double>& totals, double samples) const;
  // Collective: the same over all ranks (every rank gets the result).
  std::vector<std::pair<std::string, double>> global(dist::Communicator& comm) const;
  // The samples over all ranks of the last global() call.
  double globalSamples() const { return globalSamples_; }

 private:
  const Task& task_;
  c10::Device device_;
  at::Tensor lossSum_;                // double scalar on the device
  std::vector<at::Tensor> metricSums_;  // per metric, a double vector on the device
  double samples_ = 0;
  mutable double globalSamples_ = 0;
};

}  // namespace forge::train
