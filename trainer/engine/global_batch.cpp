#include "trainer/engine/global_batch.h"

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {
namespace {

bool splits(int64_t globalBatch, int64_t batchSize, int world) {
  if (globalBatch % world != 0) return false;
  const int64_t perRank = globalBatch / world;
  return perRank <= batchSize || perRank % batchSize == 0;
}

}  // namespace

std::vector<int> worldSizesFor(int64_t globalBatch, int64_t batchSize, int upTo) {
  std::vector<int> out;
  for (int w = 1; w <= upTo && w <= globalBatch; ++w) {
    if (splits(globalBatch, batchSize, w)) out.push_back(w);
  }
  return out;
}

std::string listText(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += concat(i ? ", " : "", v[i]);
  return s;
}

BatchSplit splitGlobalBatch(int64_t globalBatch, int64_t batchSize, int64_t accumulate, int world) {
  if (globalBatch <= 0) return {batchSize, accumulate, int64_t{world} * batchSize * accumulate};
  if (globalBatch % world != 0) {
    throw ConfigError(concat("data.global_batch_size ", globalBatch, " does not split evenly among ", world,
                             " ranks: it does on world sizes ", listText(worldSizesFor(globalBatch, batchSize, 64)),
                             " (up to 64), or set data.global_batch_size to a multiple of ", world));
  }
  const int64_t perRank = globalBatch / world;
  if (perRank <= batchSize) return {perRank, 1, globalBatch};
  if (perRank % batchSize == 0) return {batchSize, perRank / batchSize, globalBatch};
  // Micro-batch sizes up to batch_size that divide the rank's share.
  std::vector<int> sizes;
  for (int64_t b = batchSize; b >= 1 && sizes.size() < 4; --b) {
    if (perRank % b == 0) sizes.push_back(static_cast<int>(b));
  }
  throw ConfigError(concat("data.global_batch_size ", globalBatch, " on ", world, " ranks is ", perRank,
                           " samples per rank per step, which micro-batches of data.batch_size ", batchSize,
                           " do not split evenly: set data.batch_size to one of ", listText(sizes),
                           " (or any size of at least ", perRank, "), or run on world sizes ",
                           listText(worldSizesFor(globalBatch, batchSize, 64)), " (up to 64)"));
}

}  // namespace forge::train
