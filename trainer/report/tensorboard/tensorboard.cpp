#include "trainer/report/tensorboard/tensorboard.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "event.pb.h"  // generated from event.proto

namespace forge::train {
namespace {

// Reflected Castagnoli polynomial.
constexpr uint32_t kPoly = 0x82F63B78u;

std::array<uint32_t, 256> makeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> table = makeTable();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t maskedCrc32c(const void* data, size_t n) {
  uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

void dropEventsAfter(const std::string& dir, int64_t step) {
  dropEvents(dir, [step](const std::string&, int64_t s, double) { return s > step; });
}

void dropEvents(const std::string& dir, const EventFilter& drop) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string path = entry.path().string();
    if (entry.path().filename().string().find("tfevents") == std::string::npos) continue;
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::string kept;
    bool dropped = false;
    for (size_t at = 0; at < bytes.size();) {
      uint64_t length = 0;
      uint32_t lengthCrc = 0, dataCrc = 0;
      bool whole = at + 12 <= bytes.size();
      if (whole) {
        std::memcpy(&length, bytes.data() + at, 8);
        std::memcpy(&lengthCrc, bytes.data() + at + 8, 4);
        whole = lengthCrc == maskedCrc32c(bytes.data() + at, 8) && length <= bytes.size() - at - 16;
      }
      if (whole) {
        std::memcpy(&dataCrc, bytes.data() + at + 12 + length, 4);
        whole = dataCrc == maskedCrc32c(bytes.data() + at + 12, length);
      }
      if (!whole) {  // a torn or corrupt tail: nothing after it can be framed
        dropped = true;
        break;
      }
      tensorboard::Event e;
      const size_t size = 12 + length + 4;
      bool gone = false;
      if (e.ParseFromArray(bytes.data() + at + 12, static_cast<int>(length))) {
        if (e.has_session_log()) gone = drop("", e.step(), e.wall_time());
        for (const auto& v : e.summary().value()) gone = gone || drop(v.tag(), e.step(), e.wall_time());
      }
      if (gone) {
        dropped = true;
      } else {
        kept.append(bytes, at, size);
      }
      at += size;
    }
    if (!dropped) continue;
    // Not ckpt::writeFileAtomically, whose temporary file keeps the target's name in its
    // own: TensorBoard reads every file named *tfevents*, half-written copies included.
    const std::string tmp = (entry.path().parent_path() / ".forge-rewrite.tmp").string();
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << kept;
      if (!out.flush()) throw Error(concat("cannot write '", tmp, "' (disk full?)"));
    }
    fs::rename(tmp, path, ec);
    if (ec) throw Error(concat("cannot replace '", path, "': ", ec.message()));
  }
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t firstStep) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(concat("cannot create the TensorBoard folder '", dir, "': ", ec.message()));
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const double now = unixSeconds();
  const std::string base = (std::filesystem::path(dir) /
                            concat("events.out.tfevents.", static_cast<int64_t>(now), ".", host, ".", getpid()))
                               .string();
  path_ = base;
  for (int n = 1; std::filesystem::exists(path_); ++n) path_ = concat(base, ".", n);  // a second writer this second
  file_ = std::fopen(path_.c_str(), "wb");
  if (file_ == nullptr) throw Error(concat("cannot create '", path_, "': ", std::strerror(errno)));

  tensorboard::Event version;
  version.set_wall_time(now);
  version.set_file_version("brain.Event:2");
  record(version.SerializeAsString());
  tensorboard::Event start;
  start.set_wall_time(now);
  start.set_step(firstStep);
  start.mutable_session_log()->set_status(tensorboard::SessionLog::START);
  record(start.SerializeAsString());
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr && std::fclose(file_) != 0) {
    log::warn("metrics", "closing ", path_, " failed: ", std::strerror(errno));
  }
}

void TensorBoardWriter::scalar(const std::string& tag, double value, int64_t step, double wallTime) {
  tensorboard::Event e;
  e.set_wall_time(wallTime);
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  record(e.SerializeAsString());
}

void TensorBoardWriter::record(const std::string& payload) {
  // Little-endian on every machine forge builds for (x86-64, aarch64).
  const uint64_t length = payload.size();
  const uint32_t lengthCrc = maskedCrc32c(&length, sizeof length);
  const uint32_t dataCrc = maskedCrc32c(payload.data(), payload.size());
  bool ok = std::fwrite(&length, sizeof length, 1, file_) == 1 &&
            std::fwrite(&lengthCrc, sizeof lengthCrc, 1, file_) == 1 &&
            (payload.empty() || std::fwrite(payload.data(), payload.size(), 1, file_) == 1) &&
            std::fwrite(&dataCrc, sizeof dataCrc, 1, file_) == 1;
  if (!ok) throw Error(concat("cannot write to '", path_, "': ", std::strerror(errno)));
}

void TensorBoardWriter::flush() {
  if (std::fflush(file_) != 0) throw Error(concat("cannot write to '", path_, "': ", std::strerror(errno)));
}

}  // namespace forge::train
