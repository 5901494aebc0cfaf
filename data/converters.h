// Writers of forge data files (layout in data/dataset.h). Each writes to a temporary file
// beside the output and renames it into place, so a failed conversion leaves nothing behind.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace forge::data {

// Where Debian's dataset-fashion-mnist package puts the idx files.
inline constexpr const char* kFashionMnistDebianDir = "/usr/share/datasets/fashion-mnist";

// Converts the four Fashion-MNIST idx files (gzipped or not) in `sourceDir` into `out`:
// train/ and test/ with features N x 784 uint8 and labels N int64.
void convertFashionMnist(const std::string& sourceDir, const std::string& out);

// (split, rows written, rows in the split)
using ProgressFn = std::function<void(const std::string&, int64_t, int64_t)>;

struct SyntheticSpec {
  int64_t samples = 1000;      // train split; the test split gets samples / 5 (at least 1)
  int64_t features = 32;
  int64_t classes = 4;
  uint64_t seed = 0;
  ProgressFn progress;         // called after each block written (large files take a while)
};

// A learnable classification set: one Gaussian cluster per class (centres drawn from the
// seed), samples = centre + noise, float32 features, int64 labels. Written block by block:
// memory stays small whatever the size.
void writeSynthetic(const SyntheticSpec& spec, const std::string& out);

// NumPy arrays into the layout: per split, features (N x D..., uint8 / float32 / float64,
// C order, little-endian) and labels (N, any integer type, stored as int64). Streamed block
// by block into chunks sized for streaming.
struct NpySplit {
  std::string split;     // "train", "test", ...
  std::string features;  // path of the .npy file
  std::string labels;
};
void convertNpy(const std::vector<NpySplit>& splits, const std::string& out);

}  // namespace forge::data
