// Which samples each rank sees, and in which order: a pure function of
// (dataset size, seed, epoch, world size, rank). Every rank gets the same number of samples,
// so every rank runs the same number of steps and no collective is left waiting.
//   shuffle: a permutation of [0, N) drawn from (seed, epoch); otherwise 0..N-1.
//   padding: without drop_last, the permutation is extended by wrapping around to a
//            multiple of the world size; with drop_last, its tail is cut to one.
//   sharding: rank r takes positions r, r + W, r + 2W, ...
#pragma once

#include <cstdint>
#include <vector>

namespace forge::data {

class DistributedSampler {
 public:
  DistributedSampler(int64_t datasetSize, int rank, int worldSize, uint64_t seed, bool shuffle, bool dropLast);

  void setEpoch(int64_t epoch) { epoch_ = epoch; }
  int64_t epoch() const { return epoch_; }

  // This rank's sample indices for the current epoch, in visiting order.
  std::vector<int64_t> indices() const;
  int64_t samplesPerRank() const { return perRank_; }

  // The global visiting order for an epoch (before sharding and padding).
  static std::vector<int64_t> permutation(int64_t n, uint64_t seed, int64_t epoch);

 private:
  int64_t size_;
  int rank_;
  int world_;
  uint64_t seed_;
  bool shuffle_;
  bool dropLast_;
  int64_t perRank_;
  int64_t epoch_ = 0;
};

}  // namespace forge::data
