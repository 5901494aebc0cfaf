// Which samples each rank sees, and in which order. The epoch's global order is a pure
// function of (the split's blocks, seed, epoch, window), never of the world size; each
// optimizer step takes the next global batch of that order and splits it among the ranks.
// A position in the epoch is therefore a count of global samples, and a run stopped at any
// world size continues at any other at exactly the next unseen sample.
//
//   1. Blocks: the split's blocks (runs of ~1 MiB of consecutive rows, chunk-aligned) in a
//      permutation drawn from (seed, epoch); within a block, rows in file order. Without
//      shuffle: blocks in file order.
//   2. Local shuffle: that sequence is cut into global windows of `window` samples (a
//      function of data.buffer_mb and the row size only), each permuted from (seed, epoch,
//      window index). The shuffle thus moves a sample at most a window away, which is what
//      lets the loader read whole runs of rows instead of single ones.
//   3. Steps: from where the epoch starts (0, or where a resumed run stopped), step k takes
//      global samples [start + k*G, start + (k+1)*G), G the global batch; rank r takes the
//      r-th contiguous 1/world of it, cut into micro-batches of `microBatch`.
//   4. The tail: without drop_last the last, partial global batch is padded to a multiple of
//      the world size with samples from the start of the epoch's order (wrap-around, at most
//      world - 1 of them), so that every rank runs the same steps and no micro-batch is
//      empty; with drop_last it is left out (at most G - 1 samples).
#pragma once

#include <cstdint>
#include <vector>

#include "data/source.h"

namespace forge::data {

class DistributedSampler {
 public:
  // `window`: samples per global shuffle window (> 0). `microBatch`: samples per rank per
  // micro-batch; `globalBatch`: samples per step over all ranks, worldSize * microBatch * a
  // whole number of micro-batches (0: worldSize * microBatch).
  DistributedSampler(std::vector<Block> blocks, int rank, int worldSize, uint64_t seed, bool shuffle, bool dropLast,
                     int64_t window, int64_t microBatch = 1, int64_t globalBatch = 0);

  void setEpoch(int64_t epoch) { epoch_ = epoch; }
  int64_t epoch() const { return epoch_; }
  int64_t window() const { return window_; }
  int64_t datasetSize() const { return size_; }
  int64_t globalBatch() const { return globalBatch_; }
  // Samples of this rank in a whole epoch (every rank gets as many).
  int64_t samplesPerRank() const;
  // Optimizer steps in an epoch that starts at global sample `start`.
  int64_t stepsFrom(int64_t start) const;
  // Global samples of the epoch's order that are trained on (N, or less with drop_last).
  int64_t epochSamples() const;

  // The current epoch's global order (world-size independent), without padding.
  std::vector<int64_t> globalOrder() const;

  // This rank's part of the current epoch from global sample `start` on (0: the whole epoch).
  struct Plan {
    std::vector<int64_t> indices;        // this rank's samples, in visiting order
    // Positions in `indices` where the loader starts a read window: each global window's
    // first sample of this rank, moved on to the next micro-batch boundary (so a window may
    // hold the few samples of a micro-batch that straddles into the next global window).
    std::vector<int64_t> windowStarts;
    int64_t steps = 0;         // optimizer steps
    int64_t microBatches = 0;  // this rank's micro-batches, over all those steps
  };
  Plan plan(int64_t start = 0) const;

  // This rank's sample indices for the whole current epoch, in visiting order.
  std::vector<int64_t> indices() const { return plan(0).indices; }

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
  int64_t micro_;
  int64_t globalBatch_;
  int64_t epoch_ = 0;
};

}  // namespace forge::data
