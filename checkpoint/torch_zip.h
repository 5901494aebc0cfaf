// torch.save's zip format, both ways. Written without TorchScript type tags on dicts and
// lists (torch::pickle_save adds them, and Python's torch.load(weights_only=True) rejects
// the global that restores them), so Python reads forge checkpoints as plain dicts.
#pragma once

#include <ATen/core/ivalue.h>

#include <functional>
#include <vector>

namespace forge::ckpt {

std::vector<char> toTorchZip(const c10::IValue& value);
// The same archive, streamed to `sink` (tensor data goes out without an in-memory copy):
// the tensor records first, data.pkl last, as torch.save writes them.
//   alongside: run on a second thread while the tensor records are written (a checksum
//              of the same tensors, say); joined before data.pkl is written.
//   final:     called after that; returns the value to pickle as data.pkl. It must hold
//              the same tensors in the same places as `value`; only other entries may
//              differ (the checksum `alongside` computed).
void writeTorchZip(const c10::IValue& value, const std::function<void(const char*, size_t)>& sink,
                   const std::function<void()>& alongside = {}, const std::function<c10::IValue()>& final = {});
// True when the bytes are a zip archive with a pickle record (the container is intact).
bool isTorchZip(const std::vector<char>& bytes);
// Throws c10::Error on malformed input; callers turn that into a CheckpointError.
c10::IValue fromTorchZip(const std::vector<char>& bytes);

}  // namespace forge::ckpt
