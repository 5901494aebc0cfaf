#include "trainer/metrics.h"

#include <filesystem>
#include <fstream>
#include <regex>

#include "core/error.h"
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

std::string csvHeader() {
  std::string h;
  for (const auto& c : kMetricColumns) h += (h.empty() ? "" : ",") + c;
  return h + "\n";
}

}  // namespace

const std::vector<std::string> kMetricColumns = {
    "type",          "epoch",         "step", "global_step",   "wall_time",       "train_loss", "train_accuracy",
    "eval_loss",     "eval_accuracy", "lr",   "samples_per_s", "data_wait_share", "comm_share", "seconds"};

std::vector<std::pair<std::string, double>> MetricsRecord::values() const {
  std::vector<std::pair<std::string, double>> all = {
      {"train_loss", trainLoss},         {"train_accuracy", trainAccuracy}, {"eval_loss", evalLoss},
      {"eval_accuracy", evalAccuracy},   {"lr", lr},                        {"samples_per_s", samplesPerS},
      {"data_wait_share", dataWaitShare}, {"comm_share", commShare},        {"seconds", seconds}};
  std::vector<std::pair<std::string, double>> out;
  for (const auto& kv : all) {
    if (std::isfinite(kv.second)) out.push_back(kv);
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
    if (resumedAt < 0) fs::remove_all(dir);  // an earlier run's curves would mix with these
    tb_ = std::make_unique<TensorBoardWriter>(dir, std::max<int64_t>(resumedAt, 0) + 1);
  }
}

MetricsLog::~MetricsLog() = default;

void MetricsLog::write(const MetricsRecord& r) {
  const auto values = r.values();
  std::string json = concat("{\"type\": ", jsonQuote(r.type), ", \"epoch\": ", r.epoch, ", \"step\": ", r.step,
                            ", \"global_step\": ", r.globalStep, ", \"wall_time\": ", jsonNumber(r.wallTime));
  for (const auto& [k, v] : values) json += concat(", ", jsonQuote(k), ": ", jsonNumber(v));
  appendText(jsonl_, json + "}\n");

  std::string row = concat(r.type, ",", r.epoch, ",", r.step, ",", r.globalStep, ",", jsonNumber(r.wallTime));
  for (size_t c = 5; c < kMetricColumns.size(); ++c) {
    row += ",";
    for (const auto& [k, v] : values) {
      if (k == kMetricColumns[c]) row += jsonNumber(v);
    }
  }
  appendText(csv_, row + "\n");

  if (tb_) {
    for (const auto& [k, v] : values) tb_->scalar(r.type + "/" + k, v, r.globalStep, r.wallTime);
    tb_->flush();
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
  std::ofstream out(path, std::ios::trunc);
  out << kept;
  if (!out.flush()) throw Error(concat("cannot rewrite '", path, "'"));
}

}  // namespace forge::train
