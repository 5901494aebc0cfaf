// One split (train / test) of a forge data file, validated and held in memory:
//   <split>/<features>  N x D...  uint8, float32 or float64
//   <split>/<labels>    N         any integer type, values in [0, num_classes)
// Every rank loads its own copy; the file is opened by the process that reads it.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace forge::data {

struct SplitSpec {
  std::string path;               // the HDF5 file
  std::string split = "train";    // group in the file
  std::string features = "features";
  std::string labels = "labels";
  int64_t numClasses = 0;         // > 0: labels are checked against [0, numClasses)
};

struct SplitData {
  std::string name;     // "<path>:<split>", for messages
  at::Tensor features;  // N x D... as stored (uint8 / float32 / float64)
  at::Tensor labels;    // N, int64
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  // Shape of one sample (features' shape without the leading N).
  std::vector<int64_t> sampleShape() const;
};

// Reads and validates a split; DataError naming the file and dataset on any problem:
// missing file / group / dataset, unsupported dtype, feature and label counts that differ,
// an empty split, a label out of range.
SplitData loadSplit(const SplitSpec& spec);

}  // namespace forge::data
