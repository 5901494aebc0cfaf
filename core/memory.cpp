#include "core/memory.h"

#include <climits>

#include <sys/resource.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace forge {

bool keepFreedMemory() {
#if defined(__GLIBC__)
  // The mmap threshold may not exceed half of a malloc heap (HEAP_MAX_SIZE, 64 MiB on 64-bit
  // systems); glibc refuses more. Fixing it also stops glibc's adaptive threshold.
  constexpr int kLargestHeapBlock = 32 * 1024 * 1024;
  return mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1 && mallopt(M_MMAP_THRESHOLD, kLargestHeapBlock) == 1;
#else
  return false;
#endif
}

int64_t minorPageFaults() {
  struct rusage u {};
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
  return static_cast<int64_t>(u.ru_minflt);
}

}  // namespace forge
