// Reads a torch.save archive (a zip) from its bytes, trusting nothing in it before it is
// checked. Python's torch.load and LibTorch's own reader check no CRC-32 and few fields, so
// a changed byte in the zip's bookkeeping (a CRC, a name, a size) or in a small record
// (byteorder, version) reads as something else or fails later, elsewhere. Here every such
// damage is the one corruption message (checkpoint/torch_zip.h corruptMessage), whichever
// byte it hit:
//   - the end records (zip64 ones included) agree with each other and with where the
//     central directory really is; every central directory entry agrees with its local
//     header (name, flags, method, times, sizes) and its data descriptor (CRC-32, sizes);
//     the records lie inside the file, in order, without overlapping; padding is padding;
//   - every record's bytes match its CRC-32: the small ones when the archive is opened, the
//     tensor storages as they are copied out (so loading reads each byte once, and the
//     checkpoint's checksum reuses those CRC-32s instead of computing its own);
//   - the version and byteorder records say what torch writes.
// Not checked, because no reader uses them: "version made by" and the file attributes of
// central directory entries, and the versions in the zip64 end record.
// Archives written before forge recorded CRC-32s carry 0 in every entry; their records'
// CRC-32s cannot be checked (the checkpoint's own checksum still is).
#pragma once

#include <ATen/core/ivalue.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/torch_zip.h"

namespace forge::ckpt {

class TorchZipReader {
 public:
  // Checks the archive as described above, except the tensor storages' CRC-32s.
  // CheckpointError naming `source`: "is empty", "is not a torch zip archive" (bytes that are
  // no zip at all), corruptMessage() (a zip with anything wrong in it), or what a file that
  // is intact but unreadable here is (a big-endian file, a file format newer than LibTorch's).
  // `bytes` must outlive the reader.
  TorchZipReader(const std::vector<char>& bytes, std::string source);

  // A record by its name inside the archive's folder ("data.pkl"), without copying;
  // CheckpointError (corrupt) when there is none.
  std::pair<const char*, size_t> record(const std::string& name) const;
  // `pickle` unpickled on the CPU, its tensors' storages read by readStorage(). Throws what
  // LibTorch's unpickler throws (c10::Error) for a pickle it cannot parse, CheckpointError
  // for a storage that is missing or damaged.
  c10::IValue unpickle(const char* pickle, size_t size);
  // The tensor storage record data/<key>, copied into CPU memory; its CRC-32 is checked on
  // the way and kept in crcs().
  at::DataPtr readStorage(const std::string& key);
  // Checks the CRC-32 of every record readStorage() has not read (storages no tensor uses).
  void checkUnread() const;
  // The storages' CRC-32s by the copies readStorage() made (for the checkpoint's checksum).
  const RecordCrcs& crcs() const { return crcs_; }
  // The archive's file format version (the "version" record).
  uint64_t version() const { return version_; }

 private:
  struct Entry {
    size_t data = 0;  // offset of the record's bytes in the file
    uint64_t size = 0;
    uint32_t crc = 0;
    bool read = false;  // by readStorage(), which checked the CRC-32
  };
  // Where the central directory is, from the end records.
  struct Directory {
    uint64_t entries = 0, offset = 0, end = 0;
  };
  [[noreturn]] void corrupt() const;
  void parse();
  Directory findDirectory() const;
  // Checks the central directory entry at `at` with its local header and data descriptor,
  // records it, and returns where the next entry starts. `spans`: each record's extent.
  uint64_t readEntry(uint64_t at, const Directory& dir, std::vector<std::pair<uint64_t, uint64_t>>& spans);
  // Where the data descriptor of a record whose data ends at `at` ends.
  uint64_t descriptorEnd(uint64_t at, uint64_t limit, uint32_t crc, uint64_t size) const;
  void checkCrc(const Entry& e) const;
  void checkSmallRecords();

  const std::vector<char>& bytes_;
  std::string source_;
  std::string prefix_;  // the archive's folder, with its "/"
  std::map<std::string, Entry> entries_;  // by name inside the folder
  bool crcsRecorded_ = false;  // false: every entry holds CRC-32 = 0 (an early forge's file)
  uint64_t version_ = 0;
  RecordCrcs crcs_;
};

}  // namespace forge::ckpt
