#include "checkpoint/torch_zip.h"

#include <caffe2/serialize/in_memory_adapter.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <exception>

namespace forge::ckpt {

void writeTorchZip(const c10::IValue& value, const std::function<void(const char*, size_t)>& sink) {
  std::vector<char> pickled;
  torch::jit::Pickler pickler([&](const char* buf, size_t n) { pickled.insert(pickled.end(), buf, buf + n); },
                              /*tensor_table=*/nullptr, /*type_renamer=*/nullptr,
                              /*memoized_class_types=*/nullptr, /*get_tensor_id=*/nullptr,
                              /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();
  // No zip CRC-32 (torch.load accepts that, as with set_crc32_options(False) in Python):
  // the checkpoint's own checksum already reads every byte once, a second pass would cost
  // a third of the save time.
  // The sink may fail (a full disk). Its error must not unwind through the writer, whose
  // destructor would write again and terminate the process: keep the first error, drop the
  // rest of the bytes, and rethrow once the writer is done.
  std::exception_ptr failed;
  {
    caffe2::serialize::PyTorchStreamWriter writer(
        [&](const void* buf, size_t n) {
          if (!failed) {
            try {
              sink(static_cast<const char*>(buf), n);
            } catch (...) {
              failed = std::current_exception();
            }
          }
          return n;
        },
        /*compute_crc32=*/false);
    torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(), writer);
    writer.writeEndOfFile();
  }
  if (failed) std::rethrow_exception(failed);
}

std::vector<char> toTorchZip(const c10::IValue& value) {
  std::vector<char> out;
  writeTorchZip(value, [&](const char* buf, size_t n) { out.insert(out.end(), buf, buf + n); });
  return out;
}

bool isTorchZip(const std::vector<char>& bytes) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(
        std::make_shared<caffe2::serialize::MemoryReadAdapter>(bytes.data(), bytes.size()));
    return reader.hasRecord("data.pkl");
  } catch (const c10::Error&) {
    return false;
  }
}

c10::IValue fromTorchZip(const std::vector<char>& bytes) { return torch::jit::pickle_load(bytes); }

}  // namespace forge::ckpt
