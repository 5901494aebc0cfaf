#include "checkpoint/torch_zip.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <zlib.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

#include "checkpoint/torch_zip_reader.h"
#include "checkpoint/zip_records.h"
#include "core/error.h"

namespace forge::ckpt {

namespace {

// Pickles without TorchScript type tags; the tensors it references come back in pickle order.
struct Pickled {
  std::vector<char> bytes;
  std::vector<at::Tensor> tensors;
};

Pickled pickle(const c10::IValue& value) {
  Pickled out;
  torch::jit::Pickler pickler([&](const char* buf, size_t n) { out.bytes.insert(out.bytes.end(), buf, buf + n); },
                              /*tensor_table=*/nullptr, /*type_renamer=*/nullptr,
                              /*memoized_class_types=*/nullptr, /*get_tensor_id=*/nullptr,
                              /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();
  out.tensors = pickler.tensorData();
  return out;
}

using namespace zip;

// torch's zip writer (miniz) writes each record as a local header with bit 3 set (CRC-32
// and sizes follow the data, in a data descriptor), the data, then the descriptor in a
// write of its own, and at the end the central directory in one write. With compute_crc32
// off the CRC-32 fields are 0: this filter fills them in as the bytes pass, from CRCs
// computed elsewhere (the tensor records') or as the bytes go by (the small records torch
// adds itself). It relies on the write pattern torch's own writer relies on to read the
// descriptors back (caffe2 ostream_write_func); a writer that changes it is an error, never
// a file with wrong CRCs.
class CrcFiller {
 public:
  explicit CrcFiller(const std::function<void(const char*, size_t)>& sink) : sink_(sink) {}

  // The next record's data is `size` bytes whose CRC-32 `crc()` returns (it may wait).
  void announce(size_t size, std::function<uint32_t()> crc) {
    announced_ = true;
    remaining_ = size;
    crcSource_ = std::move(crc);
  }

  void operator()(const char* buf, size_t n) {
    const auto* u = reinterpret_cast<const unsigned char*>(buf);
    switch (at_) {
      case At::kBetween: return between(buf, u, n);
      case At::kHeader: return header(buf, n);
      case At::kData: return data(buf, u, n);
    }
  }

  // After the end of the archive: every record's CRC went into its descriptor and the
  // central directory.
  void finish() const {
    TORCH_CHECK(at_ == At::kBetween && centralEntries_ == crcs_.size() && !crcs_.empty(),
                "the zip writer's output did not have the expected layout (", crcs_.size(), " records, ",
                centralEntries_, " central directory entries): CRC-32s cannot be filled in");
  }

 private:
  enum class At { kBetween, kHeader, kData };

  void between(const char* buf, const unsigned char* u, size_t n) {
    const uint32_t sig = n >= 4 ? readLe32(u) : 0;
    if (sig == kLocalHeader) {
      TORCH_CHECK(n >= kLocalHeaderSize, "zip writer: a local header written in pieces");
      TORCH_CHECK(readLe16(u + 6) & 0x08, "zip writer: a record without a data descriptor");
      headerLeft_ = kLocalHeaderSize + readLe16(u + 26) + readLe16(u + 28);
      crc_ = 0;
      at_ = At::kHeader;
      return header(buf, n);
    }
    if (sig == kCentralHeader) return central(buf, u, n);
    sink_(buf, n);  // the end-of-archive records
  }

  void header(const char* buf, size_t n) {
    const size_t take = std::min(n, headerLeft_);
    sink_(buf, take);
    headerLeft_ -= take;
    if (headerLeft_ > 0) return;
    at_ = At::kData;
    if (take < n) data(buf + take, reinterpret_cast<const unsigned char*>(buf) + take, n - take);
  }

  void data(const char* buf, const unsigned char* u, size_t n) {
    const bool done = announced_ ? remaining_ == 0 : n >= 4 && readLe32(u) == kDescriptor && (n == 16 || n == 24);
    if (!done) {
      size_t take = announced_ ? std::min(n, remaining_) : n;
      if (!announced_) crc_ = static_cast<uint32_t>(crc32(crc_, u, static_cast<uInt>(take)));  // small records
      sink_(buf, take);
      if (announced_) remaining_ -= take;
      if (take < n) data(buf + take, u + take, n - take);
      return;
    }
    TORCH_CHECK((n == 16 || n == 24) && readLe32(u) == kDescriptor, "zip writer: no data descriptor after a record");
    const uint32_t crc = announced_ ? crcSource_() : crc_;
    char descriptor[24];
    std::memcpy(descriptor, buf, n);
    writeLe32(descriptor + 4, crc);
    sink_(descriptor, n);
    crcs_.push_back(crc);
    announced_ = false;
    crcSource_ = nullptr;
    at_ = At::kBetween;
  }

  void central(const char* buf, const unsigned char* u, size_t n) {
    std::vector<char> copy(buf, buf + n);
    size_t at = 0;
    while (at < n) {
      TORCH_CHECK(at + kCentralHeaderSize <= n && readLe32(u + at) == kCentralHeader && centralEntries_ < crcs_.size(),
                  "zip writer: an unexpected central directory");
      writeLe32(copy.data() + at + 16, crcs_[centralEntries_++]);
      at += kCentralHeaderSize + readLe16(u + at + 28) + readLe16(u + at + 30) + readLe16(u + at + 32);
    }
    TORCH_CHECK(at == n, "zip writer: a central directory entry written in pieces");
    sink_(copy.data(), n);
  }

  const std::function<void(const char*, size_t)>& sink_;
  At at_ = At::kBetween;
  size_t headerLeft_ = 0;
  bool announced_ = false;
  size_t remaining_ = 0;
  std::function<uint32_t()> crcSource_;
  uint32_t crc_ = 0;
  std::vector<uint32_t> crcs_;  // per record, in archive order
  size_t centralEntries_ = 0;
};

// The tensor records' CRC-32s, computed in record order on a second thread while the
// records are written; the writer waits for each one only when it writes that record's
// descriptor. Joined on every path out (an exception from a write included).
class CrcThread {
 public:
  explicit CrcThread(const std::vector<torch::jit::WriteableTensorData>& records) : records_(records) {
    thread_ = std::thread([this] {
      try {
        for (const auto& r : records_) {
          uint32_t crc = crc32Of(r.data(), r.sizeInBytes());
          std::lock_guard<std::mutex> lock(mutex_);
          crcs_.push_back(crc);
          cv_.notify_all();
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        error_ = std::current_exception();
        cv_.notify_all();
      }
    });
  }
  ~CrcThread() {
    if (thread_.joinable()) thread_.join();
  }

  uint32_t crc(size_t i) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return crcs_.size() > i || error_; });
    if (error_) std::rethrow_exception(error_);
    return crcs_[i];
  }

  RecordCrcs all() {
    RecordCrcs out;
    for (size_t i = 0; i < records_.size(); ++i) out.add(records_[i].data(), records_[i].sizeInBytes(), crc(i));
    return out;
  }

 private:
  const std::vector<torch::jit::WriteableTensorData>& records_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<uint32_t> crcs_;
  std::exception_ptr error_;
};

}  // namespace

uint32_t crc32Of(const void* data, size_t n) {
  const auto* p = static_cast<const Bytef*>(data);
  uLong crc = crc32(0L, Z_NULL, 0);
  for (size_t done = 0; done < n;) {
    uInt piece = static_cast<uInt>(std::min<size_t>(n - done, 1u << 30));
    crc = crc32(crc, p + done, piece);
    done += piece;
  }
  return static_cast<uint32_t>(crc);
}

uint32_t RecordCrcs::of(const void* data, size_t n) const {
  auto it = known_.find({data, n});
  return it != known_.end() ? it->second : crc32Of(data, n);
}

void writeTorchZip(const c10::IValue& value, const std::function<void(const char*, size_t)>& sink,
                   const std::function<c10::IValue(const RecordCrcs&)>& final) {
  Pickled first = pickle(value);
  // torch's own CRC-32 (compute_crc32) would read every record once more, on this thread,
  // before it is written; CrcThread computes the same CRCs alongside the writes instead,
  // and the checksum in data.pkl reuses them.
  // The sink may fail (a full disk). Its error must not unwind through the writer, whose
  // destructor would write again and terminate the process: keep the first error, drop the
  // rest of the bytes, and rethrow once the writer is done.
  std::exception_ptr failed;
  std::vector<torch::jit::WriteableTensorData> records;
  for (const auto& t : first.tensors) records.push_back(torch::jit::getWriteableTensorData(t));
  CrcFiller filler(sink);
  {
    caffe2::serialize::PyTorchStreamWriter writer(
        [&](const void* buf, size_t n) {
          if (!failed) {
            try {
              filler(static_cast<const char*>(buf), n);
            } catch (...) {
              failed = std::current_exception();
            }
          }
          return n;
        },
        /*compute_crc32=*/false);
    CrcThread crcs(records);
    for (size_t i = 0; i < records.size(); ++i) {
      filler.announce(records[i].sizeInBytes(), [&crcs, i] { return crcs.crc(i); });
      writer.writeRecord("data/" + std::to_string(i), records[i].data(), records[i].sizeInBytes());
    }
    if (final) {
      Pickled last = pickle(final(crcs.all()));
      bool same = last.tensors.size() == first.tensors.size();
      for (size_t i = 0; same && i < last.tensors.size(); ++i) {
        same = last.tensors[i].storage().data() == first.tensors[i].storage().data();
      }
      TORCH_CHECK(same, "writeTorchZip: the final value references other tensors than the ones written");
      writer.writeRecord("data.pkl", last.bytes.data(), last.bytes.size());
    } else {
      writer.writeRecord("data.pkl", first.bytes.data(), first.bytes.size());
    }
    writer.writeEndOfFile();
  }
  if (failed) std::rethrow_exception(failed);
  filler.finish();
}

std::vector<char> toTorchZip(const c10::IValue& value) {
  std::vector<char> out;
  writeTorchZip(value, [&](const char* buf, size_t n) { out.insert(out.end(), buf, buf + n); });
  return out;
}

std::string corruptMessage(const std::string& source) {
  return concat("checkpoint '", source, "' fails its checksum (the file is corrupt)");
}

void verifyTorchZip(const std::vector<char>& bytes, const std::string& source) { TorchZipReader(bytes, source); }

std::vector<char> pickleRecord(const std::vector<char>& bytes) {
  try {
    auto [data, size] = TorchZipReader(bytes, "").record("data.pkl");
    return std::vector<char>(data, data + size);
  } catch (const CheckpointError&) {
    return {};
  }
}

c10::IValue fromTorchZip(const std::vector<char>& bytes, const std::string& source) {
  TorchZipReader zip(bytes, source);
  auto [pickle, size] = zip.record("data.pkl");
  c10::IValue value = zip.unpickle(pickle, size);
  zip.checkUnread();
  return value;
}

}  // namespace forge::ckpt
