// forge ckpt inspect: what a checkpoint holds.
#include <nlohmann/json.hpp>

#include <cmath>
#include <iostream>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/strings.h"
#include "core/table.h"
#include "checkpoint/progress.h"
#include "trainer/app/commands.h"
#include "trainer/engine/global_batch.h"

namespace forge::train {
namespace {

const char* kCkptHelp = R"(usage: forge ckpt inspect PATH [--json]

Prints the checkpoint's epoch, step, best metric, world size, forge version, LR schedule
and sampler position, the position in global samples of the epoch and the world sizes it
resumes on exactly, and the name, shape, type and size of every tensor it holds. The file
is verified (checksum) first. --json prints the same as one JSON object.
)";

// Where a checkpoint stands in its epoch's global order, and which world sizes continue it
// at exactly the next unseen sample with the same global batches.
struct Position {
  int64_t epoch = 0, samples = 0, total = -1;  // total -1: not recorded (an older file)
  int64_t globalBatch = 0;      // of the steps so far
  int64_t globalBatchSize = 0;  // data.global_batch_size (0: unset)
  std::vector<int> worlds;      // with it set: the world sizes it splits on (up to 64)
};

int64_t samplerInt(const ckpt::Checkpoint& ck, const char* key, int64_t otherwise) {
  if (!ck.sampler.isGenericDict()) return otherwise;
  auto d = ck.sampler.toGenericDict();
  auto it = d.find(key);
  return it != d.end() && it->value().isInt() ? it->value().toInt() : otherwise;
}

Position positionOf(const std::string& path, const ckpt::Checkpoint& ck) {
  Position p;
  const ckpt::Progress progress = ckpt::progressOf(ck, path);
  p.epoch = progress.epoch;
  p.samples = progress.samples;
  p.total = samplerInt(ck, "epoch_samples_total", -1);
  p.globalBatch = samplerInt(ck, "global_batch", 0);
  p.globalBatchSize = samplerInt(ck, "global_batch_size", 0);
  if (p.globalBatchSize > 0) {
    p.worlds = worldSizesFor(p.globalBatchSize, samplerInt(ck, "batch_size_limit", p.globalBatchSize), 64);
  }
  return p;
}

std::string resumesOnText(const Position& p, int worldSize) {
  if (p.globalBatch == 0) {
    return "any world size, at the samples seen (written before global positions: the rest of the epoch's order "
           "may differ)";
  }
  if (p.globalBatchSize > 0) {
    return concat("world sizes ", listText(p.worlds), " (up to 64), with the same global batch of ",
                  p.globalBatchSize, " samples");
  }
  return concat("any world size, at the next unseen sample; a step there is world size x batch_size x "
                "accumulate_steps samples (here ", p.globalBatch, " on ", worldSize,
                " rank(s); set data.global_batch_size to keep it)");
}

struct TensorRow {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;
  int64_t bytes;
};

struct Contents {
  std::vector<TensorRow> rows;
  int64_t modelElements = 0, modelBytes = 0, optimizerBytes = 0;
};

Contents contentsOf(const ckpt::Checkpoint& ck) {
  Contents c;
  for (const auto& [name, t] : ck.modelState) {
    c.rows.push_back({"model_state_dict." + name, t.sizes().vec(), std::string(c10::toString(t.scalar_type())),
                      static_cast<int64_t>(t.nbytes())});
    c.modelElements += t.numel();
    c.modelBytes += t.nbytes();
  }
  if (!ck.optimizerState.isGenericDict()) return c;
  auto d = ck.optimizerState.toGenericDict();
  if (!d.contains("state") || !d.at("state").isGenericDict()) return c;
  for (const auto& kv : d.at("state").toGenericDict()) {
    if (!kv.value().isGenericDict()) continue;
    for (const auto& e : kv.value().toGenericDict()) {
      if (!e.value().isTensor()) continue;
      const at::Tensor& t = e.value().toTensor();
      c.rows.push_back({concat("optimizer_state_dict.state.", kv.key().toInt(), ".", e.key().toStringRef()),
                        t.sizes().vec(), std::string(c10::toString(t.scalar_type())), static_cast<int64_t>(t.nbytes())});
      c.optimizerBytes += t.nbytes();
    }
  }
  return c;
}

// The schedule and sampler dicts hold scalars.
nlohmann::ordered_json scalarsJson(const c10::IValue& v) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  if (!v.isGenericDict()) return o;
  for (const auto& kv : v.toGenericDict()) {
    const c10::IValue& x = kv.value();
    const std::string& k = kv.key().toStringRef();
    if (x.isString()) {
      o[k] = x.toStringRef();
    } else if (x.isInt()) {
      o[k] = x.toInt();
    } else if (x.isBool()) {
      o[k] = x.toBool();
    } else if (x.isDouble()) {
      o[k] = std::isfinite(x.toDouble()) ? nlohmann::json(x.toDouble()) : nlohmann::json(nullptr);
    } else {
      std::ostringstream os;
      os << x;
      o[k] = os.str();
    }
  }
  return o;
}

std::string scalarsLine(const c10::IValue& v) {
  std::string line;
  const nlohmann::ordered_json scalars = scalarsJson(v);  // items() refers to it: keep it alive
  for (const auto& [k, x] : scalars.items()) {
    const std::string value =
        x.is_string() ? x.get<std::string>() : x.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line += concat(line.empty() ? "" : ", ", k, " ", value);
  }
  return line;
}

void printJson(const std::string& path, const ckpt::Checkpoint& ck, const Contents& c) {
  nlohmann::ordered_json j;
  j["path"] = path;
  j["epoch"] = ck.epoch;
  j["step"] = ck.step;
  j["global_step"] = ck.globalStep;
  j["best_metric"] = std::isfinite(ck.bestMetric) ? nlohmann::json(ck.bestMetric) : nlohmann::json(nullptr);
  j["best_metric_name"] = ck.bestMetricName;
  j["world_size"] = ck.worldSize;
  j["forge_version"] = ck.forgeVersion;
  j["rng_states"] = ck.rngStates.size();
  j["lr_schedule"] = scalarsJson(ck.schedule);
  j["sampler"] = scalarsJson(ck.sampler);
  const Position p = positionOf(path, ck);
  j["position"] = {{"epoch", p.epoch}, {"samples", p.samples}, {"of", p.total >= 0 ? nlohmann::json(p.total)
                                                                                  : nlohmann::json(nullptr)}};
  if (p.globalBatchSize > 0) {
    j["resumes_on"] = p.worlds;
  } else {
    j["resumes_on"] = "any";
  }
  j["model_elements"] = c.modelElements;
  j["model_bytes"] = c.modelBytes;
  j["optimizer_bytes"] = c.optimizerBytes;
  j["config"] = ck.config;
  j["tensors"] = nlohmann::json::array();
  for (const auto& r : c.rows) {
    j["tensors"].push_back({{"name", r.name}, {"shape", r.shape}, {"dtype", r.dtype}, {"bytes", r.bytes}});
  }
  std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

void printTables(const std::string& path, const ckpt::Checkpoint& ck, const Contents& c) {
  auto mib = [](int64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f MiB", bytes / 1048576.0);
    return std::string(buf);
  };
  Table head({"", ""});
  head.row({"checkpoint", path})
      .row({"epoch", concat(ck.epoch, " complete")})
      .row({"step", concat(ck.step, " in the next epoch (global step ", ck.globalStep, ")")})
      .row({"best metric", std::isnan(ck.bestMetric) ? std::string("none")
                                                     : concat(ck.bestMetricName, " = ", jsonNumber(ck.bestMetric))})
      .row({"world size", concat(ck.worldSize, " (", ck.rngStates.size(), " RNG state(s))")})
      .row({"forge", ck.forgeVersion})
      .row({"model", concat(withThousands(c.modelElements), " elements in ", ck.modelState.size(), " tensors, ",
                            mib(c.modelBytes))})
      .row({"optimizer", mib(c.optimizerBytes) + " of state"});
  if (ck.schedule.isGenericDict()) head.row({"lr schedule", scalarsLine(ck.schedule)});
  if (ck.sampler.isGenericDict()) head.row({"sampler", scalarsLine(ck.sampler)});
  const Position p = positionOf(path, ck);
  head.row({"position", concat("epoch ", p.epoch + 1, ", ", p.samples, " of ",
                               p.total >= 0 ? std::to_string(p.total) : std::string("?"), " samples (global)")});
  head.row({"resumes exactly on", resumesOnText(p, ck.worldSize)});
  std::cout << head.str() << "\n";
  using A = Table::Align;
  Table tensors({"tensor", "shape", "dtype", "bytes"}, {A::kLeft, A::kLeft, A::kLeft, A::kRight});
  for (const auto& r : c.rows) tensors.row({r.name, dimsText(r.shape), r.dtype, withThousands(r.bytes)});
  std::cout << tensors.str();
}

}  // namespace

int cmdCkpt(int argc, char** argv) {
  if (auto code = subcommandOrHelp(argc, argv, kCkptHelp, "ckpt", "inspect")) return *code;
  Args a = parseArgs(argc, argv, 3, {}, {"json"}, kCkptHelp);
  if (a.help) return std::cout << kCkptHelp, 0;
  if (a.positional.size() != 1) usage("forge ckpt inspect takes one PATH", kCkptHelp);
  const std::string path = a.positional[0];
  ckpt::Checkpoint ck = ckpt::load(path);
  Contents c = contentsOf(ck);
  if (a.has("json")) {
    printJson(path, ck, c);
  } else {
    printTables(path, ck, c);
  }
  return 0;
}

}  // namespace forge::train
