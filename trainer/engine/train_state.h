// The training position, in one object: what a checkpoint records of where the run stands
// and what the loop and its observers read.
#pragma once

#include <cmath>
#include <cstdint>

namespace forge::train {

struct TrainState {
  int64_t epoch = 0;       // epochs complete
  int64_t step = 0;        // optimizer steps done in the epoch after them
  int64_t globalStep = 0;  // optimizer steps since the start of the run
  // Samples consumed in the current epoch, over all ranks: with `epoch`, the progress that
  // checkpoints and metrics records are ordered by (steps count differently at another
  // world size).
  int64_t epochSamples = 0;
  double bestMetric = std::nan("");  // the monitored eval metric's best value (NaN: none yet)
  int64_t bestEpoch = 0;   // the 1-based epoch that reached it in this session; 0: none or earlier
};

}  // namespace forge::train
