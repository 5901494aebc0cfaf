#include "trainer/metrics.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>

#include "checkpoint/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/table.h"
#include "trainer/tensorboard/tensorboard.h"

namespace forge::train {
namespace {

namespace fs = std::filesystem;

void appendText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::app);
  if (!out) throw Error(concat("cannot append to '", path, "'"));
  out << text << std::flush;
  if (!out) throw Error(concat("cannot write to '", path, "' (disk full?)"));
}

// The value columns, in order, and where a record keeps each.
const std::vector<std::pair<std::string, std::optional<double> MetricsRecord::*>> kValueColumns = {
    {"train_loss", &MetricsRecord::trainLoss},       {"train_accuracy", &MetricsRecord::trainAccuracy},
    {"eval_loss", &MetricsRecord::evalLoss},         {"eval_accuracy", &MetricsRecord::evalAccuracy},
    {"lr", &MetricsRecord::lr},                      {"samples_per_s", &MetricsRecord::samplesPerS},
    {"data_wait_share", &MetricsRecord::dataWaitShare}, {"comm_share", &MetricsRecord::commShare},
    {"seconds", &MetricsRecord::seconds}};

std::vector<std::string> allColumns() {
  std::vector<std::string> c = {"type", "epoch", "step", "global_step", "wall_time"};
  for (const auto& [name, member] : kValueColumns) c.push_back(name);
  return c;
}

}  // namespace

const std::vector<std::string> kMetricColumns = allColumns();

namespace {
std::string csvHeader() {
  std::string h;
  for (const auto& c : kMetricColumns) h += (h.empty() ? "" : ",") + c;
  return h + "\n";
}
}  // namespace

std::vector<std::pair<std::string, double>> MetricsRecord::values() const {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& [name, member] : kValueColumns) {
    if ((this->*member).has_value()) out.emplace_back(name, *(this->*member));
  }
  return out;
}

MetricsLog::MetricsLog(const std::string& runDir, bool tensorboard, int64_t resumedAt)
    : jsonl_((fs::path(runDir) / "metrics.jsonl").string()), csv_((fs::path(runDir) / "metrics.csv").string()) {
  if (resumedAt < 0) {
    fs::remove(jsonl_);
    fs::remove(csv_);
  } else {
    trimMetricsFile(jsonl_, resumedAt);
    trimMetricsFile(csv_, resumedAt);
  }
  if (!fs::exists(csv_)) appendText(csv_, csvHeader());
  if (tensorboard) {
    const std::string dir = (fs::path(runDir) / "tb").string();
    if (resumedAt < 0) {
      fs::remove_all(dir);  // an earlier run's curves would mix with these
    } else {
      // Points past the resumed step belong to the abandoned run. The session start the
      // writer records tells TensorBoard's Python loader so; its default (Rust) loader
      // ignores that, so the points go from the files too.
      dropEventsAfter(dir, resumedAt);
    }
    tb_ = std::make_unique<TensorBoardWriter>(dir, std::max<int64_t>(resumedAt, 0) + 1);
  }
}

MetricsLog::~MetricsLog() = default;

template <typename Write>
void MetricsLog::guarded(bool& on, const std::string& what, Write write) {
  if (!on) return;
  try {
    write();
  } catch (const std::exception& e) {
    on = false;
    log::warn("metrics", e.what(), ": no more records go to ", what, " in this session (training goes on)");
  }
}

void MetricsLog::write(const MetricsRecord& r) {
  guarded(jsonlOn_, jsonl_, [&] {
    std::string json = concat("{\"type\": ", jsonQuote(r.type), ", \"epoch\": ", r.epoch, ", \"step\": ", r.step,
                              ", \"global_step\": ", r.globalStep, ", \"wall_time\": ", jsonNumber(r.wallTime));
    for (const auto& [k, v] : r.values()) json += concat(", ", jsonQuote(k), ": ", jsonNumber(v));
    appendText(jsonl_, json + "}\n");
  });
  guarded(csvOn_, csv_, [&] {
    std::string row = concat(r.type, ",", r.epoch, ",", r.step, ",", r.globalStep, ",", jsonNumber(r.wallTime));
    for (const auto& [name, member] : kValueColumns) {
      const auto& v = r.*member;
      row += ",";
      if (v.has_value()) row += std::isnan(*v) ? std::string("nan") : jsonNumber(*v);
    }
    appendText(csv_, row + "\n");
  });
  if (tb_) {
    guarded(tbOn_, tb_->path(), [&] {
      for (const auto& [k, v] : r.values()) tb_->scalar(r.type + "/" + k, v, r.globalStep, r.wallTime);
      tb_->flush();
    });
  }
}

void trimMetricsFile(const std::string& path, int64_t globalStep) {
  std::ifstream in(path);
  if (!in) return;
  const bool csv = fs::path(path).extension() == ".csv";
  static const std::regex kJsonStep(R"("global_step": (\d+))");
  static const std::regex kCsvStep(R"(^[a-z]+,\d+,\d+,(\d+),)");
  std::string kept, line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, csv ? kCsvStep : kJsonStep) && std::stoll(m[1]) > globalStep) continue;
    kept += line + "\n";
  }
  in.close();
  // Replaced atomically: a crash meanwhile loses nothing.
  try {
    ckpt::writeFileAtomically(path, std::vector<char>(kept.begin(), kept.end()));
  } catch (const CheckpointError& e) {
    throw Error(e.what());  // a metrics file, not a checkpoint: exit 1 as for the other metrics I/O
  }
}

}  // namespace forge::train
