#include "data/sampler.h"

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

}  // namespace

DistributedSampler::DistributedSampler(std::vector<Block> blocks, int rank, int worldSize, uint64_t seed,
                                       bool shuffle, bool dropLast, int64_t window)
    : blocks_(std::move(blocks)), rank_(rank), world_(worldSize), seed_(seed), shuffle_(shuffle),
      dropLast_(dropLast), window_(window) {
  FORGE_CHECK(worldSize > 0 && rank >= 0 && rank < worldSize, "bad rank ", rank, " of ", worldSize);
  FORGE_CHECK(window > 0, "the shuffle window must hold at least one sample");
  for (const auto& b : blocks_) size_ += b.rows;
  perRank_ = dropLast ? size_ / world_ : (size_ + world_ - 1) / world_;
  if (perRank_ == 0) {
    throw ConfigError(concat("the split has ", size_, " samples, fewer than the ", world_,
                             " ranks (use fewer ranks or turn off data.drop_last)"));
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

std::vector<int64_t> DistributedSampler::indices() const {
  // 1. The epoch's block order.
  std::vector<int64_t> blockOrder;
  if (shuffle_) {
    blockOrder = permutation(static_cast<int64_t>(blocks_.size()), seed_, static_cast<uint64_t>(epoch_));
  } else {
    blockOrder.resize(blocks_.size());
    for (size_t i = 0; i < blocks_.size(); ++i) blockOrder[i] = static_cast<int64_t>(i);
  }
  // 2 + 3. This rank's contiguous share of the (wrapped) sequence of positions.
  const int64_t begin = static_cast<int64_t>(rank_) * perRank_;
  std::vector<int64_t> mine;
  mine.reserve(perRank_);
  int64_t pos = begin % size_;
  // Find the block holding position `pos` of the global sequence, then walk on.
  size_t bi = 0;
  int64_t blockStart = 0;
  while (blockStart + blocks_[blockOrder[bi]].rows <= pos) {
    blockStart += blocks_[blockOrder[bi]].rows;
    ++bi;
  }
  int64_t offset = pos - blockStart;
  while (static_cast<int64_t>(mine.size()) < perRank_) {
    const Block& b = blocks_[blockOrder[bi]];
    int64_t take = std::min(b.rows - offset, perRank_ - static_cast<int64_t>(mine.size()));
    for (int64_t k = 0; k < take; ++k) mine.push_back(b.firstGlobal + offset + k);
    offset = 0;
    bi = (bi + 1) % blockOrder.size();  // wrap-around padding
  }
  // 4. Permute within each window.
  if (shuffle_) {
    for (int64_t w = 0; w * window_ < perRank_; ++w) {
      int64_t first = w * window_;
      int64_t n = std::min(window_, perRank_ - first);
      uint64_t stream = mix(static_cast<uint64_t>(epoch_)) ^ mix(0xA11CE + static_cast<uint64_t>(rank_)) ^
                        mix(0xB0B + static_cast<uint64_t>(w) * 0x10001);
      std::vector<int64_t> p = permutation(n, seed_, stream);
      std::vector<int64_t> window(mine.begin() + first, mine.begin() + first + n);
      for (int64_t k = 0; k < n; ++k) mine[first + k] = window[p[k]];
    }
  }
  return mine;
}

}  // namespace forge::data
