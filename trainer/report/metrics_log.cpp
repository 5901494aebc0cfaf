#include "trainer/report/metrics_log.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "checkpoint/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/table.h"
#include "trainer/report/tensorboard/tensorboard.h"

namespace forge::train {
namespace {

namespace fs = std::filesystem;

void appendText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::app);
  if (!out) throw Error(concat("cannot append to '", path, "'"));
  out << text << std::flush;
  if (!out) throw Error(concat("cannot write to '", path, "' (disk full?)"));
}

const std::vector<std::string> kKeyColumns = {"type", "epoch", "step", "global_step", "wall_time"};

// NaN has no JSON literal: null, as Python's json.dumps(allow_nan=False) users expect.
nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

// A resumed run whose task has other metrics than the earlier sessions': the earlier rows
// move under the new header by column name (a column the new header lacks is dropped from
// the CSV, which metrics.jsonl still holds), so every value stays under its own name.
void rewriteCsvColumns(const std::string& path, const std::string& header) {
  std::ifstream in(path);
  std::string first, line;
  if (!std::getline(in, first) || first == header) return;
  const auto from = split(first, ','), to = split(header, ',');
  std::vector<int> where(to.size(), -1);
  for (size_t i = 0; i < to.size(); ++i) {
    for (size_t j = 0; j < from.size(); ++j) {
      if (from[j] == to[i]) where[i] = static_cast<int>(j);
    }
  }
  std::string text = header + "\n";
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto cells = split(line, ',');
    std::string row;
    for (size_t i = 0; i < to.size(); ++i) {
      if (i) row += ",";
      if (where[i] >= 0 && where[i] < static_cast<int>(cells.size())) row += cells[where[i]];
    }
    text += row + "\n";
  }
  in.close();
  log::warn("metrics", path, ": the columns changed since the earlier session (", first, " -> ", header,
            "); its rows are rewritten under the new header");
  ckpt::writeFileAtomically(path, std::vector<char>(text.begin(), text.end()));
}

}  // namespace

std::vector<std::string> metricColumns(const std::vector<std::string>& metrics) {
  std::vector<std::string> c = {"train_loss"};
  for (const auto& m : metrics) c.push_back("train_" + m);
  c.push_back("eval_loss");
  for (const auto& m : metrics) c.push_back("eval_" + m);
  for (const char* s : {"lr", "samples_per_s", "data_wait_share", "comm_share", "seconds"}) c.push_back(s);
  return c;
}

std::optional<double> MetricsRecord::get(const std::string& column) const {
  for (const auto& [k, v] : values) {
    if (k == column) return v;
  }
  return std::nullopt;
}

MetricsLog::MetricsLog(Paths paths, std::vector<std::string> columns, int64_t resumedAt)
    : columns_(std::move(columns)), jsonl_(std::move(paths.jsonl)), csv_(std::move(paths.csv)) {
  if (resumedAt < 0) {
    fs::remove(jsonl_);
    fs::remove(csv_);
  } else {
    trimMetricsFile(jsonl_, resumedAt);
    trimMetricsFile(csv_, resumedAt);
  }
  std::string header;
  for (const auto& c : kKeyColumns) header += (header.empty() ? "" : ",") + c;
  for (const auto& c : columns_) header += "," + c;
  if (!fs::exists(csv_)) {
    appendText(csv_, header + "\n");
  } else {
    rewriteCsvColumns(csv_, header);
  }
  if (!paths.tensorboard.empty()) {
    const std::string& dir = paths.tensorboard;
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
  for (const auto& [k, v] : r.values) {
    if (std::find(columns_.begin(), columns_.end(), k) == columns_.end()) {
      throw Error(concat("metrics record has a value for '", k, "', which is not a column of this run"));
    }
  }
  guarded(jsonlOn_, jsonl_, [&] {
    nlohmann::ordered_json j = {{"type", r.type}, {"epoch", r.epoch}, {"step", r.step}, {"global_step", r.globalStep},
                                {"wall_time", r.wallTime}};
    for (const auto& c : columns_) {
      if (auto v = r.get(c)) j[c] = number(*v);
    }
    appendText(jsonl_, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  });
  guarded(csvOn_, csv_, [&] {
    std::string row = concat(r.type, ",", r.epoch, ",", r.step, ",", r.globalStep, ",", jsonNumber(r.wallTime));
    for (const auto& c : columns_) {
      row += ",";
      if (auto v = r.get(c)) row += std::isnan(*v) ? std::string("nan") : jsonNumber(*v);
    }
    appendText(csv_, row + "\n");
  });
  if (tb_) {
    guarded(tbOn_, tb_->path(), [&] {
      for (const auto& c : columns_) {
        if (auto v = r.get(c)) tb_->scalar(r.type + "/" + c, *v, r.globalStep, r.wallTime);
      }
      tb_->flush();
    });
  }
}

void trimMetricsFile(const std::string& path, int64_t globalStep) {
  std::ifstream in(path);
  if (!in) return;
  const bool csv = fs::path(path).extension() == ".csv";
  std::string kept, line;
  bool header = csv;
  while (std::getline(in, line)) {
    int64_t step = -1;
    if (header) {
      header = false;
    } else if (csv) {
      auto cells = split(line, ',');  // type,epoch,step,global_step,...
      if (cells.size() > 3) {
        try {
          step = std::stoll(cells[3]);
        } catch (const std::exception&) {
        }
      }
    } else {
      auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains("global_step") && j["global_step"].is_number_integer()) {
        step = j["global_step"].get<int64_t>();
      }
    }
    if (step > globalStep) continue;
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
