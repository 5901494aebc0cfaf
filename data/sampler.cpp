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

DistributedSampler::DistributedSampler(int64_t datasetSize, int rank, int worldSize, uint64_t seed, bool shuffle,
                                       bool dropLast)
    : size_(datasetSize), rank_(rank), world_(worldSize), seed_(seed), shuffle_(shuffle), dropLast_(dropLast) {
  FORGE_CHECK(worldSize > 0 && rank >= 0 && rank < worldSize, "bad rank ", rank, " of ", worldSize);
  perRank_ = dropLast ? size_ / world_ : (size_ + world_ - 1) / world_;
  if (perRank_ == 0) {
    throw ConfigError(concat("the split has ", size_, " samples, fewer than the ", world_,
                    " ranks (use fewer ranks or turn off data.drop_last)"));
  }
}

std::vector<int64_t> DistributedSampler::permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  SplitMix rng{mix(seed) ^ mix(static_cast<uint64_t>(epoch) + 0x5EED)};
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
    std::swap(order[i], order[j]);
  }
  return order;
}

std::vector<int64_t> DistributedSampler::indices() const {
  std::vector<int64_t> order;
  if (shuffle_) {
    order = permutation(size_, seed_, epoch_);
  } else {
    order.resize(size_);
    for (int64_t i = 0; i < size_; ++i) order[i] = i;
  }
  std::vector<int64_t> mine;
  mine.reserve(perRank_);
  for (int64_t k = 0; k < perRank_; ++k) {
    int64_t pos = k * world_ + rank_;
    mine.push_back(order[pos % size_]);  // wrap-around padding
  }
  return mine;
}

}  // namespace forge::data
