// Which samples each rank sees, and in which order: a pure function of (the split's blocks,
// seed, epoch, world size, rank), so that a resumed run sees exactly the batches the
// uninterrupted run would have seen, and every rank gets the same number of samples (so the
// same number of steps, and no collective is left waiting).
//
//   1. Global order: the split's blocks (runs of ~1 MiB of consecutive rows, chunk-aligned)
//      in a permutation drawn from (seed, epoch); within a block, rows in file order.
//      Without shuffle: blocks in file order.
//   2. Padding: without drop_last the sequence wraps around to a multiple of the world
//      size; with drop_last its tail is cut to one.
//   3. Sharding: rank r takes the r-th contiguous share, so a rank reads whole blocks (only
//      the two ends of its share may be partial) and ranks never read the same block.
//   4. Local shuffle: the share is cut into windows of `window` samples (the loader's
//      buffer), and each window is permuted from (seed, epoch, rank, window index).
// The loader reads each window's rows as a few contiguous runs (never one HDF5 call per
// sample), so the shuffle costs no random I/O and memory stays bounded by the window.
#pragma once

#include <cstdint>
#include <vector>

#include "data/source.h"

namespace forge::data {

class DistributedSampler {
 public:
  // `window`: samples per shuffle window (> 0); the loader reads one window at a time.
  DistributedSampler(std::vector<Block> blocks, int rank, int worldSize, uint64_t seed, bool shuffle, bool dropLast,
                     int64_t window);

  void setEpoch(int64_t epoch) { epoch_ = epoch; }
  int64_t epoch() const { return epoch_; }
  int64_t samplesPerRank() const { return perRank_; }
  int64_t window() const { return window_; }
  int64_t datasetSize() const { return size_; }

  // This rank's sample indices for the current epoch, in visiting order.
  std::vector<int64_t> indices() const;

  // Where a rank is within an epoch: what a checkpoint stores to resume mid-epoch.
  struct State {
    int64_t epoch = 0;
    int64_t position = 0;  // samples of this rank's share already consumed
  };

  // A permutation of [0, n) drawn from (seed, stream): Fisher-Yates with splitmix64, fully
  // specified (std:: distributions are implementation-defined).
  static std::vector<int64_t> permutation(int64_t n, uint64_t seed, uint64_t stream);

 private:
  std::vector<Block> blocks_;
  int64_t size_ = 0;
  int rank_;
  int world_;
  uint64_t seed_;
  bool shuffle_;
  bool dropLast_;
  int64_t window_;
  int64_t perRank_ = 0;
  int64_t epoch_ = 0;
};

}  // namespace forge::data
