// The zip format's record signatures, sizes and little-endian fields, as the writer
// (checkpoint/torch_zip.cpp) and the reader (checkpoint/torch_zip_reader.cpp) both need
// them (PKWARE APPNOTE 4.3).
#pragma once

#include <cstddef>
#include <cstdint>

namespace forge::ckpt::zip {

inline constexpr uint32_t kLocalHeader = 0x04034b50, kDescriptor = 0x08074b50, kCentralHeader = 0x02014b50,
                          kEnd = 0x06054b50, kEnd64Locator = 0x07064b50, kEnd64 = 0x06064b50;
inline constexpr size_t kLocalHeaderSize = 30, kCentralHeaderSize = 46, kEndSize = 22, kEnd64LocatorSize = 20,
                        kEnd64Size = 56;
// Extra-field block ids: the zip64 sizes and offset, and the padding torch's writer puts in
// local headers so that each record's data starts 64-byte aligned ("FB", filled with 'Z').
inline constexpr uint16_t kZip64Extra = 0x0001, kTorchPadding = 0x4246;

inline uint16_t readLe16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
inline uint32_t readLe32(const unsigned char* p) {
  return p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24;
}
inline uint64_t readLe64(const unsigned char* p) { return readLe32(p) | static_cast<uint64_t>(readLe32(p + 4)) << 32; }
inline void writeLe32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}

}  // namespace forge::ckpt::zip
