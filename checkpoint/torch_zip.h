// torch.save's zip format, both ways. Written without TorchScript type tags on dicts and
// lists (torch::pickle_save adds them, and Python's torch.load(weights_only=True) rejects
// the global that restores them), so Python reads forge checkpoints as plain dicts. Every
// entry carries its real CRC-32, so zip tools (unzip -t, Python's zipfile) can test it.
// Reading checks every byte of the archive that a reader uses (checkpoint/torch_zip_reader.h).
#pragma once

#include <ATen/core/ivalue.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace forge::ckpt {

// The CRC-32 of zip and zlib over a byte range of any size.
uint32_t crc32Of(const void* data, size_t n);

// The CRC-32s of the tensor records an archive was written with, by the bytes they cover:
// a checksum over the same tensors looks them up instead of reading every byte again.
class RecordCrcs {
 public:
  // The CRC-32 of [data, data + n): the record's when a record had exactly these bytes,
  // computed otherwise.
  uint32_t of(const void* data, size_t n) const;
  void add(const void* data, size_t n, uint32_t crc) { known_[{data, n}] = crc; }

 private:
  std::map<std::pair<const void*, size_t>, uint32_t> known_;
};

std::vector<char> toTorchZip(const c10::IValue& value);
// The same archive, streamed to `sink` (tensor data goes out without an in-memory copy):
// the tensor records first, data.pkl last, as torch.save writes them. A second thread
// computes the tensor records' CRC-32s while they are written (each goes into the data
// descriptor after its record, and into the central directory).
//   final: called once the tensor records are written, with their CRC-32s; returns the
//          value to pickle as data.pkl. It must hold the same tensors in the same places as
//          `value`; only other entries may differ (a checksum over the tensors, say).
void writeTorchZip(const c10::IValue& value, const std::function<void(const char*, size_t)>& sink,
                   const std::function<c10::IValue(const RecordCrcs&)>& final = {});

// The one message for a file whose bytes changed after it was written (a record's CRC-32 or
// the checkpoint's own checksum disagrees with the contents, or the zip's bookkeeping with
// itself): every command that reads a checkpoint says this, in the same words.
std::string corruptMessage(const std::string& source);
// Checks the container before anything is read from it (checkpoint/torch_zip_reader.h: its
// structure, and the CRC-32 of every record but the tensor storages, which are checked as
// they are read). CheckpointError naming `source` otherwise.
void verifyTorchZip(const std::vector<char>& bytes, const std::string& source);
// The pickle record's bytes (an empty vector when the archive has none or is damaged).
std::vector<char> pickleRecord(const std::vector<char>& bytes);
// The archive's value, checked as verifyTorchZip() checks it and every record's CRC-32 with
// it (CheckpointError naming `source`); c10::Error for a pickle LibTorch cannot parse.
c10::IValue fromTorchZip(const std::vector<char>& bytes, const std::string& source = "archive");

}  // namespace forge::ckpt
