// Writers of forge data files (layout in data/dataset.h). Each writes to a temporary file
// beside the output and renames it into place, so a failed conversion leaves nothing behind.
#pragma once

#include <cstdint>
#include <string>

namespace forge::data {

// Where Debian's dataset-fashion-mnist package puts the idx files.
inline constexpr const char* kFashionMnistDebianDir = "/usr/share/datasets/fashion-mnist";

// Converts the four Fashion-MNIST idx files (gzipped or not) in `sourceDir` into `out`:
// train/ and test/ with features N x 784 uint8 and labels N int64.
void convertFashionMnist(const std::string& sourceDir, const std::string& out);

struct SyntheticSpec {
  int64_t samples = 1000;      // train split; the test split gets samples / 5 (at least 1)
  int64_t features = 32;
  int64_t classes = 4;
  uint64_t seed = 0;
};

// A learnable classification set: one Gaussian cluster per class (centres drawn from the
// seed), samples = centre + noise, float32 features, int64 labels.
void writeSynthetic(const SyntheticSpec& spec, const std::string& out);

}  // namespace forge::data
