// How far training got, in a measure that does not depend on the world size that got there:
// epochs complete, and samples consumed (over all ranks) in the epoch after them. Optimizer
// steps are no such measure: a step of 3 ranks consumes half as many samples again as a
// step of 2, so after a change of rank count global steps count differently. Checkpoint
// names, retention, resume discovery and the trimming of the metrics files all order by
// this.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>

namespace forge::ckpt {

struct Progress {
  int64_t epoch = 0;    // epochs complete
  int64_t samples = 0;  // samples consumed in the epoch after them, summed over ranks

  bool operator<(const Progress& o) const { return std::tie(epoch, samples) < std::tie(o.epoch, o.samples); }
  bool operator>(const Progress& o) const { return o < *this; }
  bool operator<=(const Progress& o) const { return !(o < *this); }
  bool operator>=(const Progress& o) const { return !(*this < o); }
  bool operator==(const Progress& o) const { return epoch == o.epoch && samples == o.samples; }
  bool operator!=(const Progress& o) const { return !(*this == o); }

  // "3 epochs + 1600 samples", for messages.
  std::string text() const {
    return std::to_string(epoch) + " epoch(s) + " + std::to_string(samples) + " samples";
  }
};

}  // namespace forge::ckpt
