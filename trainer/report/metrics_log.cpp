#include "trainer/report/metrics_log.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

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

const std::vector<std::string> kKeyColumns = {"type", "epoch", "step", "epoch_samples", "global_step", "wall_time"};

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
  for (const char* s : {"lr", "samples_per_s", "data_wait_share", "comm_share", "seconds", "grad_norm",
                        "skipped_steps"}) {
    c.push_back(s);
  }
  return c;
}

std::optional<double> MetricsRecord::get(const std::string& column) const {
  for (const auto& [k, v] : values) {
    if (k == column) return v;
  }
  return std::nullopt;
}

MetricsLog::MetricsLog(Paths paths, std::vector<std::string> columns, const std::optional<ResumePoint>& resumedAt)
    : columns_(std::move(columns)), jsonl_(std::move(paths.jsonl)), csv_(std::move(paths.csv)) {
  Trimmed trimmed;
  if (!resumedAt) {
    fs::remove(jsonl_);
    fs::remove(csv_);
  } else {
    trimmed = trimMetricsFile(jsonl_, *resumedAt);
    trimMetricsFile(csv_, *resumedAt);
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
    // The session starts past every point kept: after a change of world size the resumed
    // global step can be below those of kept records (steps counted differently), and a
    // session start at or below them would make TensorBoard drop them.
    const int64_t firstStep = resumedAt ? std::max(resumedAt->globalStep, trimmed.lastKeptStep) + 1 : 1;
    if (!resumedAt) {
      fs::remove_all(dir);  // an earlier run's curves would mix with these
    } else {
      // The points of the records dropped above belong to the abandoned run. The session
      // start the writer records tells TensorBoard's Python loader so; its default (Rust)
      // loader ignores that, so the points go from the files too: the same records, named by
      // type, global step and wall time (a global step alone can repeat across world sizes).
      std::set<RecordId> gone(trimmed.dropped.begin(), trimmed.dropped.end());
      dropEvents(dir, [&](const std::string& tag, int64_t step, double wallTime) {
        if (tag.empty()) return step >= firstStep;  // a session start this one supersedes
        return gone.count(RecordId{tag.substr(0, tag.find('/')), step, wallTime}) > 0;
      });
    }
    tb_ = std::make_unique<TensorBoardWriter>(dir, firstStep);
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
    nlohmann::ordered_json j = {{"type", r.type},
                                {"epoch", r.epoch},
                                {"step", r.step},
                                {"epoch_samples", r.epochSamples},
                                {"global_step", r.globalStep},
                                {"wall_time", r.wallTime}};
    for (const auto& c : columns_) {
      if (auto v = r.get(c)) j[c] = number(*v);
    }
    appendText(jsonl_, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  });
  guarded(csvOn_, csv_, [&] {
    std::string row =
        concat(r.type, ",", r.epoch, ",", r.step, ",", r.epochSamples, ",", r.globalStep, ",", jsonNumber(r.wallTime));
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

bool recordAtOrBefore(const std::string& type, int64_t epoch, std::optional<int64_t> epochSamples,
                      int64_t globalStep, const ResumePoint& at) {
  if (type == "epoch") return epoch <= at.progress.epoch;  // 1-based: epochs complete after it
  const int64_t complete = epoch - 1;                       // before the step's epoch
  if (complete != at.progress.epoch) return complete < at.progress.epoch;
  return epochSamples ? *epochSamples <= at.progress.samples : globalStep <= at.globalStep;
}

Trimmed trimMetricsFile(const std::string& path, const ResumePoint& at) {
  Trimmed out;
  std::ifstream in(path);
  if (!in) return out;
  const bool csv = fs::path(path).extension() == ".csv";
  std::string kept, line;
  std::vector<std::string> header;  // the CSV's columns, by which its cells are read
  auto column = [&](const std::vector<std::string>& cells, const char* name) -> std::optional<std::string> {
    auto it = std::find(header.begin(), header.end(), name);
    size_t i = static_cast<size_t>(it - header.begin());
    if (it == header.end() || i >= cells.size() || cells[i].empty()) return std::nullopt;
    return cells[i];
  };
  auto integer = [](const std::optional<std::string>& text) -> std::optional<int64_t> {
    if (!text) return std::nullopt;
    try {
      return std::stoll(*text);
    } catch (const std::exception&) {
      return std::nullopt;
    }
  };
  while (std::getline(in, line)) {
    if (csv && header.empty()) {
      header = split(line, ',');
      kept += line + "\n";
      continue;
    }
    std::string type;
    std::optional<int64_t> epoch, samples, step;
    double wallTime = 0;
    if (csv) {
      auto cells = split(line, ',');
      type = column(cells, "type").value_or("");
      epoch = integer(column(cells, "epoch"));
      samples = integer(column(cells, "epoch_samples"));
      step = integer(column(cells, "global_step"));
    } else {
      auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      auto get = [&](const char* key) -> std::optional<int64_t> {
        if (!j.is_object() || !j.contains(key) || !j[key].is_number_integer()) return std::nullopt;
        return j[key].get<int64_t>();
      };
      if (j.is_object() && j.contains("type") && j["type"].is_string()) type = j["type"].get<std::string>();
      epoch = get("epoch");
      samples = get("epoch_samples");
      step = get("global_step");
      if (j.is_object() && j.contains("wall_time") && j["wall_time"].is_number()) {
        wallTime = j["wall_time"].get<double>();
      }
    }
    // A line that cannot be read as a record (cut short by a crash) is kept as it is.
    if (!type.empty() && epoch && step && !recordAtOrBefore(type, *epoch, samples, *step, at)) {
      out.dropped.push_back(RecordId{type, *step, wallTime});
      continue;
    }
    if (step) out.lastKeptStep = std::max(out.lastKeptStep, *step);
    kept += line + "\n";
  }
  in.close();
  // Replaced atomically: a crash meanwhile loses nothing.
  try {
    ckpt::writeFileAtomically(path, std::vector<char>(kept.begin(), kept.end()));
  } catch (const CheckpointError& e) {
    throw Error(e.what());  // a metrics file, not a checkpoint: exit 1 as for the other metrics I/O
  }
  return out;
}

}  // namespace forge::train
