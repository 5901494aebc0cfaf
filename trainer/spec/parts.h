// The parts a training run is assembled from, each registered under the name the YAML config
// uses (trainer/spec/registry.h): a model factory, a loss, metrics, an optimizer and a
// learning-rate schedule. forge's own parts register exactly as a user's do; nothing in the
// training loop names one.
#pragma once

#include <ATen/core/Dict.h>
#include <torch/optim/optimizer.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/batch_loader.h"
#include "trainer/spec/model.h"
#include "trainer/spec/options.h"

namespace forge {

// model.name: builds the model from its keys (the rest of the `model:` section). Called on
// every rank after the same manual_seed, so initial weights agree (rank 0's are broadcast
// anyway).
struct ModelSpec {
  std::string name;
  std::string help;
  OptionSpec options;
  std::function<ModelHandle(const Options&)> make;
  // Optional: "" or why samples of `sampleShape` cannot be this model's input, naming the
  // key to change (checked before any training; the shape probe catches the rest). With
  // next-token targets the shape is the model's input's: a stored sequence less its last token.
  std::function<std::string(const std::vector<int64_t>& sampleShape, const Options&)> checkInput;
  // Optional, for a model that embeds token ids: how many ids it has embeddings for. Before
  // training every id in the data is checked to lie in [0, vocabulary) (an id outside would
  // index past the embedding table).
  std::function<int64_t(const Options&)> vocabulary;
};

// task.loss: the mean loss over a batch, a scalar that backward starts from (0-d; a single
// element of another shape is taken as one). `output` is the model's, in fp32.
struct LossSpec {
  std::string name;
  std::string help;
  std::function<at::Tensor(const at::Tensor& output, const data::Batch& batch)> loss;
  // Optional: "" or why the model's output cannot go with the batch's targets (checked on
  // the probe batch before training, so a mismatch is a setup error, not a crash mid-run).
  std::function<std::string(const at::Tensor& output, const data::Batch& batch)> check;
};

// task.metrics: a value summed over batches and ranks, then turned into the metric. Recorded
// as train_<name> and eval_<name> (metrics.jsonl, .csv, TensorBoard, the epoch line).
struct MetricSpec {
  std::string name;   // "accuracy"
  std::string label;  // on the epoch line: "acc"
  std::string help;
  bool percent = false;        // shown as a percentage
  bool higherIsBetter = true;  // for the best checkpoint when it is the monitored metric
  // This batch's sums: a 1-D double tensor on the output's device, the same length for
  // every batch. Runs without gradients.
  std::function<at::Tensor(const at::Tensor& output, const data::Batch& batch)> sums;
  // The metric from the totals over all batches and ranks and the number of samples they
  // cover. Unset: totals[0] / samples.
  std::function<double(const std::vector<double>& totals, double samples)> value;
  // Optional: when the run's loss is the one named here, the batch's sums from its mean
  // loss instead of `sums` (perplexity from cross_entropy: no second pass over the logits).
  std::string reusesLoss;
  std::function<at::Tensor(const at::Tensor& meanLoss, const data::Batch& batch)> sumsFromLoss;
  // Optional: "" or why the model's output and the batch's targets are not what this metric
  // measures (checked on the probe batch before training, like LossSpec::check).
  std::function<std::string(const at::Tensor& output, const data::Batch& batch)> check;
};

struct OptimizerArgs {
  double lr = 0;
  double weightDecay = 0;
  const Options* options = nullptr;  // the optimizer's own keys
};

// optimizer.name: makes the optimizer, and saves / loads its per-parameter state in the
// layout of Python's torch.optim state_dict (so a checkpoint reads the same in both).
struct OptimizerSpec {
  std::string name;
  std::string help;
  OptionSpec options;
  std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<at::Tensor> params, const OptimizerArgs&)> make;
  // One parameter's state as {name: tensor}, Python's optimizer.state_dict()["state"][i].
  std::function<c10::impl::GenericDict(const torch::optim::OptimizerParamState&)> saveState;
  // The inverse. `tensor(key)` returns the named state tensor (CheckpointError when it is
  // missing or its shape differs from the parameter's), `has(key)` whether it is there.
  struct StateReader {
    std::function<at::Tensor(const std::string&)> tensor;
    std::function<bool(const std::string&)> has;
    std::function<int64_t(const std::string&)> step;
  };
  std::function<std::unique_ptr<torch::optim::OptimizerParamState>(const StateReader&)> loadState;
  // The hyper-parameters of param_groups[0], besides lr, weight_decay and params.
  std::function<void(c10::impl::GenericDict& group, const OptimizerArgs&)> saveGroup;
};

struct ScheduleArgs {
  double baseLr = 0;
  int64_t globalStep = 0;  // optimizer steps from 0
  int64_t epoch = 0;       // 0-based, the epoch globalStep falls in
  int64_t totalSteps = 1;  // steps per epoch x epochs
  int64_t warmupSteps = 0;
};

// schedule.name: the learning rate as a pure function of the position in training (so a
// resumed run gets exactly the rate it would have had). Linear warmup is applied on top.
struct ScheduleSpec {
  std::string name;
  std::string help;
  OptionSpec options;
  std::function<double(const ScheduleArgs&, const Options&)> lr;
};

}  // namespace forge
