// FNV-1a, 64 bits: a stable hash of bytes for comparing things across ranks and runs
// (not for security).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace forge {

inline constexpr uint64_t kFnvOffset = 1469598103934665603ULL;

inline uint64_t fnv1a(const void* data, size_t n, uint64_t h = kFnvOffset) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ bytes[i]) * 1099511628211ULL;
  return h;
}

// 16 lowercase hex digits.
inline std::string hex64(uint64_t h) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}

}  // namespace forge
