#include "core/memory.h"

#include <climits>

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

}  // namespace forge
