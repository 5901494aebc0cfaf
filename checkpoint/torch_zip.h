// torch.save's zip format, both ways. Written without TorchScript type tags on dicts and
// lists (torch::pickle_save adds them, and Python's torch.load(weights_only=True) rejects
// the global that restores them), so Python reads forge checkpoints as plain dicts.
#pragma once

#include <ATen/core/ivalue.h>

#include <functional>
#include <vector>

namespace forge::ckpt {

std::vector<char> toTorchZip(const c10::IValue& value);
// The same archive, streamed to `sink` (tensor data goes out without an in-memory copy).
void writeTorchZip(const c10::IValue& value, const std::function<void(const char*, size_t)>& sink);
// True when the bytes are a zip archive with a pickle record (the container is intact).
bool isTorchZip(const std::vector<char>& bytes);
// Throws c10::Error on malformed input; callers turn that into a CheckpointError.
c10::IValue fromTorchZip(const std::vector<char>& bytes);

}  // namespace forge::ckpt
