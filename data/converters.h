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
  int64_t classes = 4;         // classification (targets == 0)
  uint64_t seed = 0;
  ProgressFn progress;         // called after each block written (large files take a while)
  int64_t targets = 0;         // > 0: regression with this many float targets per sample
  double noise = 0.1;          // regression: standard deviation of the noise added to the targets
};

// A learnable set, written block by block (memory stays small whatever the size):
// - classification: one Gaussian cluster per class (centres drawn from the seed), samples =
//   centre + noise, float32 features, int64 labels;
// - regression (targets > 0): features ~ N(0, 1), targets = x W + b + noise N(0, noise^2)
//   with W ~ N(0, 1 / features) and b ~ N(0, 1) drawn from the seed, float32 (N) for one
//   target, else (N, targets). The best any model can do is a mean squared error of noise^2
//   (the noise floor), and a linear model can reach it.
void writeSynthetic(const SyntheticSpec& spec, const std::string& out);

// NumPy arrays into the layout: per split, features (N x D..., C order, little-endian:
// uint8 / float32 / float64 values, or integer token ids of any width, stored as they are)
// and labels: none (language modelling), integers (N, stored as int64) or floats (N x D...,
// float32 / float64 as they are). Streamed block by block into chunks sized for streaming.
struct NpySplit {
  std::string split;     // "train", "test", ...
  std::string features;  // path of the .npy file
  std::string labels;    // "" for none
};
void convertNpy(const std::vector<NpySplit>& splits, const std::string& out);

// Text into byte-level sequences for language modelling. `inputs` are files, or folders
// whose regular files are taken in name order (symbolic links and files that look binary,
// with a NUL byte in their first 8 KiB, are left out and counted). The last `testFraction`
// of each file is held out: test/features holds sequences of that text, train/features of
// the rest, each N x (context + 1) uint8, consecutive sequences overlapping by one byte so
// that every byte after a stream's first is a target once. The test group carries
// attribute `unigram_entropy_nats`: the entropy of the held-out target bytes under their
// own byte frequencies (what a model that ignores context at best reaches).
struct TextSpec {
  std::vector<std::string> inputs;
  int64_t context = 128;
  double testFraction = 0.1;
};
struct TextSummary {
  int64_t files = 0, skipped = 0;
  int64_t trainBytes = 0, testBytes = 0;
  int64_t trainSequences = 0, testSequences = 0;
  double unigramEntropyNats = 0;
};
TextSummary convertText(const TextSpec& spec, const std::string& out);

}  // namespace forge::data
