// Evaluation on a split: the model in eval mode, without gradients, each rank on its own
// disjoint contiguous share, streamed (no sample counted twice, memory bounded), the loss
// and the task's metrics summed over all ranks. Collective: all ranks, same order.
#pragma once

#include "data/batch_loader.h"
#include "data/source.h"
#include "distributed/communicator.h"
#include "trainer/engine/metric_sums.h"
#include "trainer/spec/model.h"

namespace forge::train {

struct EvalResult {
  // ("loss", mean loss per sample), then each metric of the task by name.
  std::vector<std::pair<std::string, double>> values;
  int64_t samples = 0;  // over all ranks
  // Classification only (integer targets, [batch, classes] outputs): per class (by label),
  // samples and argmax hits over all ranks; empty otherwise.
  std::vector<int64_t> classSamples;
  std::vector<int64_t> classCorrect;

  double value(const std::string& name) const;  // NaN when absent
  double loss() const { return value("loss"); }
};

// What the data file says the result compares with, for the split it came from: the
// held-out text's byte-unigram entropy beside the loss (forge data text), the noise floor
// beside the mean squared error (forge data synthetic --targets).
struct Reference {
  std::string value;      // "loss", "mse"
  std::string reference;  // "byte-unigram entropy", "noise floor"
  double result = 0;      // the result's value
  double level = 0;       // the reference's
  double ratio() const { return result / level; }
  std::string text() const;  // "loss 1.5210 = 0.57x the byte-unigram entropy of this text (2.6590)"
};
std::vector<Reference> referencesOf(const EvalResult& r, const data::SplitSource& split);

EvalResult evaluate(const ModelHandle& model, const Task& task, const data::SplitSource& split,
                    const data::Normalization& norm, int64_t batchSize, dist::Communicator& comm,
                    c10::Device device = c10::kCPU);

}  // namespace forge::train
