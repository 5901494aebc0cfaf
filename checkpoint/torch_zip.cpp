#include "checkpoint/torch_zip.h"

#include <caffe2/serialize/in_memory_adapter.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <exception>
#include <string>
#include <thread>

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

// Joins the helper thread on every path out (an exception from a write included).
struct Joined {
  std::thread thread;
  std::exception_ptr error;
  ~Joined() {
    if (thread.joinable()) thread.join();
  }
};

}  // namespace

void writeTorchZip(const c10::IValue& value, const std::function<void(const char*, size_t)>& sink,
                   const std::function<void()>& alongside, const std::function<c10::IValue()>& final) {
  Pickled first = pickle(value);
  // No zip CRC-32 (torch.load accepts that, as with set_crc32_options(False) in Python):
  // the checkpoint's own checksum already reads every byte once.
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
    Joined helper;
    if (alongside) {
      helper.thread = std::thread([&] {
        try {
          alongside();
        } catch (...) {
          helper.error = std::current_exception();
        }
      });
    }
    for (size_t i = 0; i < first.tensors.size(); ++i) {
      torch::jit::WriteableTensorData data = torch::jit::getWriteableTensorData(first.tensors[i]);
      writer.writeRecord("data/" + std::to_string(i), data.data(), data.sizeInBytes());
    }
    if (helper.thread.joinable()) helper.thread.join();
    if (helper.error) std::rethrow_exception(helper.error);
    if (final) {
      Pickled last = pickle(final());
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
