// Turning stored rows into a batch (for BatchLoader's assembling threads and readBatch):
// values normalized to float32 in one multiply-add each, with the non-finite check in the
// same pass (vectorized kernels chosen by the CPU at load time), or token ids widened to
// int64; and each sample's targets (a class, float values, or the next tokens of the row).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "data/batch_loader.h"

namespace forge::data {

// out = (in * scale - mean) / std, as one multiply-add per value: out = in * a + b.
struct Affine {
  std::vector<float> a, b;
  // The same a and b for every feature (one mean and std, the common case): the vector
  // loops then keep them in registers instead of loading two more values per value.
  bool uniform = true;
  explicit Affine(const ExpandedNormalization& nm) : a(nm.mean.size()), b(nm.mean.size()) {
    for (size_t j = 0; j < a.size(); ++j) {
      a[j] = nm.scale * nm.invStd[j];
      b[j] = -nm.mean[j] * nm.invStd[j];
      uniform = uniform && a[j] == a[0] && b[j] == b[0];
    }
  }
};

// Which feature of row r of stored rows at `base` (n values a row) is not finite; -1 when
// none is (for the message, once a row is known to hold one).
int64_t firstNonFinite(const void* base, at::ScalarType type, int64_t r, int64_t n);

// The tensors of one batch of `rows` samples of `source`, filled one sample at a time.
class BatchFill {
 public:
  // Page-locked tensors when `pinned` (for non-blocking copies to a GPU).
  BatchFill(const SplitSource& source, const Affine& affine, int64_t rows, bool pinned);

  // Sample `sample`, stored as row r of `base`, into position m. False when a feature value
  // is not finite (nothing is written for the targets then).
  bool put(const void* base, int64_t r, int64_t sample, int64_t m);

  // The first m samples, shaped as the model and the loss take them.
  Batch batch(int64_t m) const;

 private:
  const SplitSource& source_;
  const Affine& affine_;
  at::ScalarType type_;
  Targets targets_;
  bool tokens_;
  int64_t n_;        // stored values a row
  int64_t inputs_;   // values a row of x
  int64_t targetValues_;  // values a row of y
  at::Tensor x_, y_;
  // The tensors' and the labels' memory, taken once (not per sample).
  float* xValues_ = nullptr;
  int64_t* xTokens_ = nullptr;
  float* yValues_ = nullptr;
  int64_t* yIds_ = nullptr;
  const int64_t* classes_ = nullptr;
  const float* values_ = nullptr;
};

}  // namespace forge::data
