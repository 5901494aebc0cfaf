// Elapsed time on the monotonic clock, for timings and summaries.
#pragma once

#include <chrono>

namespace forge {

inline double secondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace forge
