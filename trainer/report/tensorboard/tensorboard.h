// TensorBoard event files: TFRecord framing (length, masked CRC32C of the length, payload,
// masked CRC32C of the payload) around protobuf-encoded Event messages (event.proto).
// `tensorboard --logdir runs/` shows every run's scalars.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace forge::train {

// CRC-32C (Castagnoli) of `n` bytes, and the masked form TFRecord stores.
uint32_t crc32c(const void* data, size_t n);
uint32_t maskedCrc32c(const void* data, size_t n);

// Rewrites the event files in `dir` without the points and session logs that `drop` picks
// (a resume from an earlier position): it is asked with each scalar's tag, step and wall
// time, and with an empty tag for a session log. A record cut short by a crash is dropped
// too. Files with nothing to drop are left as they are; the others are replaced atomically.
using EventFilter = std::function<bool(const std::string& tag, int64_t step, double wallTime)>;
void dropEvents(const std::string& dir, const EventFilter& drop);
// The points (and session logs) past `step`.
void dropEventsAfter(const std::string& dir, int64_t step);

class TensorBoardWriter {
 public:
  // Creates `dir` and a new events.out.tfevents.<time>.<host>.<pid> file in it, starting
  // with the file-version record and a session START at `firstStep` (points of an earlier
  // file at steps >= firstStep are dropped by TensorBoard).
  TensorBoardWriter(const std::string& dir, int64_t firstStep);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void scalar(const std::string& tag, double value, int64_t step, double wallTime);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void record(const std::string& payload);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace forge::train
