// What this process has used so far (getrusage): CPU time of all its threads, and minor page
// faults (memory the kernel had to map in). Differences between two readings cost a step.
#pragma once

#include <cstdint>

#include <sys/resource.h>

namespace forge {

struct ProcessUsage {
  double cpuSeconds = 0;  // user + system, every thread
  int64_t minorFaults = 0;

  ProcessUsage operator-(const ProcessUsage& o) const { return {cpuSeconds - o.cpuSeconds, minorFaults - o.minorFaults}; }
  ProcessUsage& operator+=(const ProcessUsage& o) {
    cpuSeconds += o.cpuSeconds;
    minorFaults += o.minorFaults;
    return *this;
  }
};

inline ProcessUsage processUsage() {
  struct rusage u {};
  if (getrusage(RUSAGE_SELF, &u) != 0) return {};
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return {seconds(u.ru_utime) + seconds(u.ru_stime), static_cast<int64_t>(u.ru_minflt)};
}

}  // namespace forge
