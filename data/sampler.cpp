#include "data/sampler.h"

#include <algorithm>

#include "core/error.h"

namespace forge::data {
namespace {

// splitmix64: turns (seed, epoch) into a well-mixed 64-bit state.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// A generator whose output is fully specified (std::
// distributions are implementation-defined, which would tie the order to a libstdc++ version).
struct SplitMix {
  uint64_t state;
  uint64_t next() { return mix(state += 0x9E3779B97F4A7C15ULL); }
  // Uniform in [0, bound) by rejection, no modulo bias.
  uint64_t below(uint64_t bound) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do r = next(); while (r >= limit);
    return r % bound;
  }
};

// The epoch's global order, one window at a time: a rank needs a slice of every window, so
// the whole order is never held, only the window being read (memory O(window), not O(N)).
class GlobalOrder {
 public:
  GlobalOrder(const std::vector<Block>& blocks, int64_t size, uint64_t seed, int64_t epoch, bool shuffle,
              int64_t window)
      : blocks_(blocks), size_(size), seed_(seed), epoch_(epoch), shuffle_(shuffle), window_(window) {
    if (shuffle) {
      order_ = DistributedSampler::permutation(static_cast<int64_t>(blocks.size()), seed, static_cast<uint64_t>(epoch));
    } else {
      order_.resize(blocks.size());
      for (size_t i = 0; i < blocks.size(); ++i) order_[i] = static_cast<int64_t>(i);
    }
    starts_.resize(order_.size() + 1, 0);
    for (size_t i = 0; i < order_.size(); ++i) starts_[i + 1] = starts_[i] + blocks[order_[i]].rows;
  }

  // The sample at global position `pos` (0 <= pos < size).
  int64_t at(int64_t pos) {
    const int64_t w = pos / window_;
    if (w != current_) fill(w);
    return samples_[pos - w * window_];
  }

 private:
  void fill(int64_t w) {
    const int64_t first = w * window_;
    const int64_t n = std::min(window_, size_ - first);
    samples_.resize(n);
    size_t bi = std::upper_bound(starts_.begin(), starts_.end(), first) - starts_.begin() - 1;
    int64_t offset = first - starts_[bi];
    for (int64_t k = 0; k < n;) {
      const Block& b = blocks_[order_[bi]];
      const int64_t take = std::min(b.rows - offset, n - k);
      for (int64_t j = 0; j < take; ++j) samples_[k + j] = b.firstGlobal + offset + j;
      k += take;
      offset = 0;
      ++bi;
    }
    if (shuffle_) {
      // The stream names neither rank nor world size: every world size shuffles alike.
      const uint64_t stream = mix(static_cast<uint64_t>(epoch_)) ^ mix(0xB0B + static_cast<uint64_t>(w) * 0x10001);
      std::vector<int64_t> p = DistributedSampler::permutation(n, seed_, stream);
      std::vector<int64_t> plain = samples_;
      for (int64_t k = 0; k < n; ++k) samples_[k] = plain[p[k]];
    }
    current_ = w;
  }

  const std::vector<Block>& blocks_;
  int64_t size_;
  uint64_t seed_;
  int64_t epoch_;
  bool shuffle_;
  int64_t window_;
  std::vector<int64_t> order_;   // block order
  std::vector<int64_t> starts_;  // global position of each block in that order, and the end
  std::vector<int64_t> samples_;
  int64_t current_ = -1;
};

}  // namespace

DistributedSampler::DistributedSampler(std::vector<Block> blocks, int rank, int worldSize, uint64_t seed,
                                       bool shuffle, bool dropLast, int64_t window, int64_t microBatch,
                                       int64_t globalBatch)
    : blocks_(std::move(blocks)), rank_(rank), world_(worldSize), seed_(seed), shuffle_(shuffle),
      dropLast_(dropLast), window_(window), micro_(microBatch),
      globalBatch_(globalBatch > 0 ? globalBatch : int64_t{worldSize} * microBatch) {
  FORGE_CHECK(worldSize > 0 && rank >= 0 && rank < worldSize, "bad rank ", rank, " of ", worldSize);
  FORGE_CHECK(window > 0, "the shuffle window must hold at least one sample");
  FORGE_CHECK(micro_ > 0 && globalBatch_ % (int64_t{worldSize} * micro_) == 0, "a global batch of ", globalBatch_,
              " does not split into micro-batches of ", micro_, " on ", worldSize, " ranks");
  for (const auto& b : blocks_) size_ += b.rows;
  if (size_ < world_ || (dropLast_ && size_ < globalBatch_)) {
    throw ConfigError(concat("the split has ", size_, " samples, fewer than ",
                             dropLast_ ? concat("one global batch (", globalBatch_, ") with data.drop_last")
                                       : concat("the ", world_, " ranks"),
                             " (use fewer ranks", dropLast_ ? ", a smaller batch or turn off data.drop_last)" : ")"));
  }
}

std::vector<int64_t> DistributedSampler::permutation(int64_t n, uint64_t seed, uint64_t stream) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  SplitMix rng{mix(seed) ^ mix(stream + 0x5EED)};
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
    std::swap(order[i], order[j]);
  }
  return order;
}

int64_t DistributedSampler::stepsFrom(int64_t start) const {
  const int64_t rest = std::max<int64_t>(0, size_ - start);
  return rest / globalBatch_ + (!dropLast_ && rest % globalBatch_ != 0 ? 1 : 0);
}

int64_t DistributedSampler::epochSamples() const {
  return dropLast_ ? size_ / globalBatch_ * globalBatch_ : size_;
}

int64_t DistributedSampler::samplesPerRank() const {
  const int64_t full = size_ / globalBatch_, rest = size_ % globalBatch_;
  const int64_t last = dropLast_ ? 0 : (rest + world_ - 1) / world_;
  return full * (globalBatch_ / world_) + last;
}

std::vector<int64_t> DistributedSampler::globalOrder() const {
  GlobalOrder g(blocks_, size_, seed_, epoch_, shuffle_, window_);
  std::vector<int64_t> out(size_);
  for (int64_t i = 0; i < size_; ++i) out[i] = g.at(i);
  return out;
}

DistributedSampler::Plan DistributedSampler::plan(int64_t start) const {
  start = std::clamp<int64_t>(start, 0, size_);
  Plan p;
  p.steps = stepsFrom(start);
  GlobalOrder g(blocks_, size_, seed_, epoch_, shuffle_, window_);
  // Where the rank's positions cross into the next global window, per step: the rank's
  // count of samples before global position `pos` (pos within step k starting at a, its
  // share q per rank).
  int64_t nextWindow = (start / window_ + 1) * window_;
  p.windowStarts.push_back(0);
  std::vector<int64_t> padding;  // the order's first samples, for the wrap-around
  for (int64_t k = 0; k < p.steps; ++k) {
    const int64_t a = start + k * globalBatch_;
    const int64_t len = std::min(globalBatch_, size_ - a);
    // The padded length of the last step: a multiple of the world size.
    const int64_t padded = (len + world_ - 1) / world_ * world_;
    const int64_t q = padded / world_;
    const int64_t first = a + rank_ * q;
    for (int64_t i = first; i < first + q; ++i) {
      // Global positions past the end wrap to the start of the order (the padding).
      p.indices.push_back(g.at(i % size_));
    }
    p.microBatches += (q + micro_ - 1) / micro_;
    // Global windows that begin inside this step: the rank's window starts at its first
    // sample at or after that global position, moved on to a micro-batch boundary.
    while (nextWindow < a + len) {
      const int64_t mineBefore =
          static_cast<int64_t>(p.indices.size()) - q + std::clamp<int64_t>(nextWindow - first, 0, q);
      const int64_t at = (mineBefore + micro_ - 1) / micro_ * micro_;
      if (at > p.windowStarts.back()) p.windowStarts.push_back(at);
      nextWindow += window_;
    }
  }
  while (!p.windowStarts.empty() && p.windowStarts.back() >= static_cast<int64_t>(p.indices.size())) {
    p.windowStarts.pop_back();
  }
  return p;
}

}  // namespace forge::data
