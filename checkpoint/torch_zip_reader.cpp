#include "checkpoint/torch_zip_reader.h"

#include <caffe2/serialize/versions.h>
#include <torch/csrc/jit/serialization/unpickler.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "checkpoint/zip_records.h"
#include "core/error.h"

namespace forge::ckpt {
namespace {

using namespace zip;

constexpr uint32_t kMax32 = 0xffffffffu;
constexpr uint16_t kMax16 = 0xffff;
constexpr uint16_t kEncrypted = 0x0001, kHasDescriptor = 0x0008;

// Thrown while the archive is parsed, turned into the corruption message by the reader.
struct Damaged {};

// Sums and offsets from the file, never allowed to wrap.
uint64_t add(uint64_t a, uint64_t b) {
  if (a + b < a) throw Damaged{};
  return a + b;
}

// A header's extra field: blocks of (id, length, data) that fill it exactly. Returns the
// zip64 block's values (as many as it holds); torch's padding blocks must hold only 'Z'.
// torch's writer writes no other kind, so any other is damage (to an id, most likely).
std::vector<uint64_t> parseExtra(const unsigned char* p, size_t n) {
  std::vector<uint64_t> zip64;
  size_t at = 0;
  while (at < n) {
    if (at + 4 > n) throw Damaged{};
    const uint16_t id = readLe16(p + at), len = readLe16(p + at + 2);
    if (at + 4 + len > n) throw Damaged{};
    const unsigned char* data = p + at + 4;
    if (id == kZip64Extra) {
      if (len % 8 != 0) throw Damaged{};
      for (size_t i = 0; i < len; i += 8) zip64.push_back(readLe64(data + i));
    } else if (id == kTorchPadding) {
      if (std::any_of(data, data + len, [](unsigned char c) { return c != 'Z'; })) throw Damaged{};
    } else {
      throw Damaged{};
    }
    at += 4 + len;
  }
  return zip64;
}

}  // namespace

TorchZipReader::TorchZipReader(const std::vector<char>& bytes, std::string source)
    : bytes_(bytes), source_(std::move(source)) {
  if (bytes_.empty()) throw CheckpointError(concat("checkpoint '", source_, "' is empty"));
  try {
    parse();
  } catch (const Damaged&) {
    corrupt();
  }
  checkSmallRecords();
}

void TorchZipReader::corrupt() const { throw CheckpointError(corruptMessage(source_)); }

TorchZipReader::Directory TorchZipReader::findDirectory() const {
  const auto* u = reinterpret_cast<const unsigned char*>(bytes_.data());
  const uint64_t size = bytes_.size();
  // The end record: the last one whose comment reaches exactly to the end of the file.
  std::optional<uint64_t> end;
  if (size >= kEndSize) {
    const uint64_t last = size - kEndSize, first = last > 65535 ? last - 65535 : 0;
    for (uint64_t at = last + 1; at-- > first;) {
      if (readLe32(u + at) == kEnd && at + kEndSize + readLe16(u + at + 20) == size) {
        end = at;
        break;
      }
    }
  }
  if (!end) {
    // A zip that lost its end (truncated) or has a damaged one; or no zip at all.
    if (size >= 4 && readLe32(u) == kLocalHeader) throw Damaged{};
    throw CheckpointError(concat("checkpoint '", source_, "' is not a torch zip archive (not a checkpoint, or "
                                 "damaged beyond recognition)"));
  }
  const unsigned char* e = u + *end;
  if (readLe16(e + 4) != 0 || readLe16(e + 6) != 0) throw Damaged{};  // one disk only
  Directory dir{readLe16(e + 8), readLe32(e + 16), *end};
  uint64_t size32 = readLe32(e + 12);
  if (readLe16(e + 10) != dir.entries) throw Damaged{};
  if (*end >= kEnd64LocatorSize + kEnd64Size && readLe32(e - kEnd64LocatorSize) == kEnd64Locator) {
    const unsigned char* loc = e - kEnd64LocatorSize;
    const uint64_t at = readLe64(loc + 8);
    const uint64_t locAt = *end - kEnd64LocatorSize;
    if (readLe32(loc + 4) != 0 || readLe32(loc + 16) != 1 || at > locAt || locAt - at < kEnd64Size) throw Damaged{};
    const unsigned char* e64 = u + at;
    if (readLe32(e64) != kEnd64 || readLe64(e64 + 4) != locAt - at - 12 || readLe32(e64 + 16) != 0 ||
        readLe32(e64 + 20) != 0 || readLe64(e64 + 24) != readLe64(e64 + 32)) {
      throw Damaged{};
    }
    // The end record holds the same values, or the "see the zip64 record" markers.
    auto same = [](uint64_t narrow, uint64_t wide, uint64_t marker) { return narrow == wide || narrow == marker; };
    if (!same(dir.entries, readLe64(e64 + 32), kMax16) || !same(size32, readLe64(e64 + 40), kMax32) ||
        !same(dir.offset, readLe64(e64 + 48), kMax32)) {
      throw Damaged{};
    }
    dir = Directory{readLe64(e64 + 32), readLe64(e64 + 48), at};
    size32 = readLe64(e64 + 40);
  } else if (dir.entries == kMax16 || size32 == kMax32 || dir.offset == kMax32) {
    throw Damaged{};  // markers without the zip64 records they point to
  }
  // The directory ends where the end records begin.
  if (add(dir.offset, size32) != dir.end) throw Damaged{};
  if (dir.entries == 0) {
    throw CheckpointError(concat("checkpoint '", source_, "' is not a torch zip archive (an empty zip)"));
  }
  return dir;
}

uint64_t TorchZipReader::readEntry(uint64_t at, const Directory& dir, std::vector<std::pair<uint64_t, uint64_t>>& spans) {
  const auto* u = reinterpret_cast<const unsigned char*>(bytes_.data());
  if (add(at, kCentralHeaderSize) > dir.end || readLe32(u + at) != kCentralHeader) throw Damaged{};
  const unsigned char* c = u + at;
  const uint16_t flags = readLe16(c + 8), method = readLe16(c + 10);
  const uint16_t nameLen = readLe16(c + 28), extraLen = readLe16(c + 30), commentLen = readLe16(c + 32);
  const uint64_t next = add(at, kCentralHeaderSize + nameLen + extraLen + commentLen);
  if (next > dir.end || readLe16(c + 34) != 0) throw Damaged{};
  if ((flags & kEncrypted) || method != 0) throw Damaged{};  // torch stores records, never compressed
  const std::string name(reinterpret_cast<const char*>(c + kCentralHeaderSize), nameLen);
  // Values of 0xffffffff are in the zip64 block, in this order.
  std::vector<uint64_t> zip64 = parseExtra(c + kCentralHeaderSize + nameLen, extraLen);
  size_t used = 0;
  auto wide = [&](uint32_t narrow) -> uint64_t {
    if (narrow != kMax32) return narrow;
    if (used >= zip64.size()) throw Damaged{};
    return zip64[used++];
  };
  const uint64_t usize = wide(readLe32(c + 24)), csize = wide(readLe32(c + 20)), local = wide(readLe32(c + 42));
  if (usize != csize) throw Damaged{};
  // The local header repeats the central directory's fields.
  if (add(local, kLocalHeaderSize) > dir.offset || readLe32(u + local) != kLocalHeader) throw Damaged{};
  const unsigned char* l = u + local;
  if (readLe16(l + 4) != readLe16(c + 6) || readLe16(l + 6) != flags || readLe16(l + 8) != method ||
      readLe32(l + 10) != readLe32(c + 12)) {  // version needed, flags, method, time and date
    throw Damaged{};
  }
  const uint16_t localNameLen = readLe16(l + 26), localExtraLen = readLe16(l + 28);
  const uint64_t data = add(local, kLocalHeaderSize + localNameLen + localExtraLen);
  if (data > dir.offset || localNameLen != nameLen ||
      std::memcmp(l + kLocalHeaderSize, c + kCentralHeaderSize, nameLen) != 0) {
    throw Damaged{};
  }
  parseExtra(l + kLocalHeaderSize + nameLen, localExtraLen);
  // With a descriptor the local header holds 0 for CRC-32 and sizes (APPNOTE 4.4.4);
  // otherwise the same values as the central directory (sizes past 4 GiB in its own zip64
  // block).
  const bool descriptor = flags & kHasDescriptor;
  const uint32_t crc = readLe32(c + 16);
  if (descriptor ? readLe32(l + 14) != 0 || readLe32(l + 18) != 0 || readLe32(l + 22) != 0
                 : readLe32(l + 14) != crc || (readLe32(l + 18) != readLe32(c + 20) && readLe32(l + 18) != kMax32) ||
                       (readLe32(l + 22) != readLe32(c + 24) && readLe32(l + 22) != kMax32)) {
    throw Damaged{};
  }
  uint64_t recordEnd = add(data, usize);
  if (recordEnd > dir.offset) throw Damaged{};
  if (descriptor) recordEnd = descriptorEnd(recordEnd, dir.offset, crc, usize);
  spans.emplace_back(local, recordEnd);
  // Every record lives in the archive's folder (the first one's), under a name of its own.
  if (prefix_.empty()) {
    const size_t slash = name.find('/');
    if (slash == std::string::npos || slash == 0) throw Damaged{};
    prefix_ = name.substr(0, slash + 1);
  }
  if (name.size() <= prefix_.size() || name.compare(0, prefix_.size(), prefix_) != 0) throw Damaged{};
  if (!entries_.emplace(name.substr(prefix_.size()), Entry{static_cast<size_t>(data), usize, crc, false}).second) {
    throw Damaged{};
  }
  return next;
}

uint64_t TorchZipReader::descriptorEnd(uint64_t at, uint64_t limit, uint32_t crc, uint64_t size) const {
  // Signature (optional), CRC-32, then both sizes in 4 bytes each, or 8 in zip64 archives.
  const auto* u = reinterpret_cast<const unsigned char*>(bytes_.data());
  if (add(at, 4) <= limit && readLe32(u + at) == kDescriptor) at += 4;
  if (add(at, 12) > limit || readLe32(u + at) != crc) throw Damaged{};
  if (readLe32(u + at + 4) == size && readLe32(u + at + 8) == size) return at + 12;
  if (add(at, 20) <= limit && readLe64(u + at + 4) == size && readLe64(u + at + 12) == size) return at + 20;
  throw Damaged{};
}

void TorchZipReader::parse() {
  const Directory dir = findDirectory();
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // each record, local header to descriptor end
  uint64_t at = dir.offset;
  for (uint64_t i = 0; i < dir.entries; ++i) at = readEntry(at, dir, spans);
  if (at != dir.end) throw Damaged{};
  // The records lie in order, none inside another.
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second) throw Damaged{};
  }
  crcsRecorded_ = std::any_of(entries_.begin(), entries_.end(), [](const auto& kv) { return kv.second.crc != 0; });
}

void TorchZipReader::checkCrc(const Entry& e) const {
  if (crcsRecorded_ && crc32Of(bytes_.data() + e.data, e.size) != e.crc) corrupt();
}

void TorchZipReader::checkSmallRecords() {
  for (const auto& [name, e] : entries_) {
    if (name.compare(0, 5, "data/") != 0) checkCrc(e);
  }
  if (!entries_.count("data.pkl")) {
    throw CheckpointError(concat("checkpoint '", source_, "' is a zip archive but not one torch.save writes (it "
                                 "holds no data.pkl)"));
  }
  // The version LibTorch's reader requires ("3\n" from forge); newer writers may put it in
  // .data/version.
  auto version = entries_.count(".data/version") ? record(".data/version") : record("version");
  std::string text(version.first, version.second);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (text.empty() || text.size() > 6 || !std::all_of(text.begin(), text.end(), digit)) corrupt();
  version_ = std::stoull(text);
  if (version_ < caffe2::serialize::kMinSupportedFileFormatVersion ||
      version_ > caffe2::serialize::kMaxSupportedFileFormatVersion) {
    throw CheckpointError(concat("checkpoint '", source_, "' has file format version ", version_, ", which this "
                                 "forge's LibTorch does not read (", caffe2::serialize::kMinSupportedFileFormatVersion,
                                 " to ", caffe2::serialize::kMaxSupportedFileFormatVersion, "): save it again with "
                                 "this torch version"));
  }
  // What Python's torch.load requires; forge reads tensors in this machine's byte order only.
  if (entries_.count("byteorder")) {
    auto order = record("byteorder");
    const std::string text(order.first, order.second);
    if (text != "little" && text != "big") corrupt();
    if (text != "little") {
      throw CheckpointError(concat("checkpoint '", source_, "' was written on a big-endian machine, and forge reads "
                                   "little-endian files only: load it with torch.load and save it again here"));
    }
  }
}

std::pair<const char*, size_t> TorchZipReader::record(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) corrupt();
  return {bytes_.data() + it->second.data, it->second.size};
}

at::DataPtr TorchZipReader::readStorage(const std::string& key) {
  auto it = entries_.find("data/" + key);
  if (it == entries_.end()) corrupt();  // the pickle names a storage the archive does not hold
  Entry& e = it->second;
  at::DataPtr out = c10::GetCPUAllocator()->allocate(e.size);
  // Copied and CRC'd in pieces that stay in cache between the two: one pass over memory.
  constexpr size_t kPiece = 256 << 10;
  const char* from = bytes_.data() + e.data;
  auto* to = static_cast<char*>(out.get());
  uLong crc = crc32(0L, Z_NULL, 0);
  for (size_t done = 0; done < e.size;) {
    const size_t n = std::min<size_t>(kPiece, e.size - done);
    std::memcpy(to + done, from + done, n);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(to + done), static_cast<uInt>(n));
    done += n;
  }
  if (crcsRecorded_ && static_cast<uint32_t>(crc) != e.crc) corrupt();
  e.read = true;
  crcs_.add(out.get(), e.size, static_cast<uint32_t>(crc));
  return out;
}

void TorchZipReader::checkUnread() const {
  for (const auto& [name, e] : entries_) {
    if (!e.read && name.compare(0, 5, "data/") == 0) checkCrc(e);
  }
}

c10::IValue TorchZipReader::unpickle(const char* pickle, size_t size) {
  size_t offset = 0;
  torch::jit::Unpickler unpickler(
      [&](char* buf, size_t n) {
        n = std::min(n, size - offset);
        std::memcpy(buf, pickle + offset, n);
        offset += n;
        return n;
      },
      nullptr, nullptr, [this](const std::string& key) { return readStorage(key); }, at::Device(at::kCPU));
  unpickler.set_version(version_);
  return unpickler.parse_ivalue();
}

}  // namespace forge::ckpt
