#include "trainer/module/build.h"

#include <torch/torch.h>

#include <cctype>
#include <fstream>
#include <new>
#include <sstream>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {
namespace {

std::string gib(double bytes) {
  std::ostringstream os;
  os.precision(bytes < 1e9 ? 3 : 4);
  os << bytes / double(1 << 30) << " GiB";
  return os.str();
}

// "hidden=1e11, num_classes=10": the values that size the model, for the message.
std::string valuesText(const ModelSpec& spec, const Options& options) {
  std::vector<std::string> parts;
  for (const auto& [key, value] : options.values()) {
    if (spec.options.find(key) != nullptr) parts.push_back(key + "=" + optionText(value));
  }
  return join(parts, ", ");
}

// The byte count in LibTorch's "you tried to allocate N bytes", or -1.
int64_t bytesAsked(const std::string& message) {
  const std::string marker = "tried to allocate ";
  auto at = message.find(marker);
  if (at == std::string::npos) return -1;
  at += marker.size();
  int64_t n = 0;
  bool any = false;
  while (at < message.size() && std::isdigit(static_cast<unsigned char>(message[at]))) {
    n = n * 10 + (message[at++] - '0');
    any = true;
  }
  return any ? n : -1;
}

bool isAllocationFailure(const std::string& message) {
  return message.find("can't allocate memory") != std::string::npos ||
         message.find("Storage size calculation overflowed") != std::string::npos ||
         message.find("out of memory") != std::string::npos || message.find("Out of memory") != std::string::npos;
}

}  // namespace

int64_t nodeMemoryAvailableBytes() {
  int64_t available = -1;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") available = kib * 1024;
  }
  // cgroup v2: a job step's limit (Slurm's --mem) is what this process can use.
  std::ifstream limitFile("/sys/fs/cgroup/memory.max");
  std::string limit;
  if (limitFile >> limit && !limit.empty() && std::isdigit(static_cast<unsigned char>(limit[0]))) {
    const int64_t l = std::stoll(limit);
    if (available < 0 || l < available) available = l;
  }
  return available;
}

ModelHandle buildRegisteredModel(const ModelSpec& spec, const Options& options, int64_t copies) {
  const int64_t available = nodeMemoryAvailableBytes();
  auto refuse = [&](const std::string& need) {
    throw ConfigError(concat("model '", spec.name, "' (", valuesText(spec, options), ") does not fit this node: ", need,
                             ", and the node has ", available < 0 ? std::string("an unknown amount") : gib(available),
                             " of memory available; make the model smaller or give the job more memory"));
  };
  ModelHandle model;
  try {
    model = spec.make(options);
  } catch (const std::bad_alloc&) {
    refuse("allocating its parameters failed");
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    if (!isAllocationFailure(what)) throw;
    const int64_t asked = bytesAsked(what);
    refuse(asked < 0 ? std::string("allocating its parameters failed (sizes beyond any memory)")
                     : concat("one of its parameters alone needs ", gib(double(asked))));
  }
  if (model.module && available > 0) {
    int64_t bytes = 0;
    for (const auto& p : model.module->parameters()) bytes += p.numel() * static_cast<int64_t>(p.element_size());
    const double need = double(bytes) * double(copies);
    if (need > double(available)) {
      refuse(concat("its ", withThousands(bytes / 4), " float32 parameters take ", gib(double(bytes)), ", about ",
                    gib(need), " with gradients and optimizer state for every rank on the node"));
    }
  }
  return model;
}

}  // namespace forge::train
