// How a step's global batch is split among ranks: per-rank micro-batch and micro-batches
// per step for a world size. With data.global_batch_size set, the global batch (and so the
// data order of every step and the loss curve) stays the same when a run moves to another
// world size; without it, it is world * batch_size * accumulate_steps, as configured.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace forge::train {

struct BatchSplit {
  int64_t microBatch = 0;  // samples per rank per micro-batch
  int64_t accumulate = 1;  // micro-batches per optimizer step
  int64_t global = 0;      // samples per optimizer step, over all ranks
};

// `globalBatch` 0: unset (batchSize and accumulate as given). Set: per-rank samples per
// step = globalBatch / world, as one micro-batch when it is at most batchSize, else as
// micro-batches of batchSize (accumulate is then derived). ConfigError, naming the world
// sizes and batch sizes that would work, when it does not split evenly.
BatchSplit splitGlobalBatch(int64_t globalBatch, int64_t batchSize, int64_t accumulate, int world);

// The world sizes in [1, upTo] on which `globalBatch` splits (see splitGlobalBatch).
std::vector<int> worldSizesFor(int64_t globalBatch, int64_t batchSize, int upTo);

// "1, 2, 3, 4, 6, 12": for messages.
std::string listText(const std::vector<int>& v);

}  // namespace forge::train
