// What a run records, by rank 0, in its run dir (the paths come from trainer/engine/run_dir.h):
//   metrics.jsonl  one JSON object per line: a "step" record every log.every_steps optimizer
//                  steps and an "epoch" record after each epoch's evaluation;
//   metrics.csv    the same records, one row each, columns "type, epoch, step, global_step,
//                  wall_time" then the value columns (empty cell = the field does not apply,
//                  e.g. eval_loss of a step record);
//   tb/            the same values as TensorBoard scalars "<type>/<column>" at global_step.
// A resumed run appends to all three after dropping records past its position.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace forge::train {

class TensorBoardWriter;

// The value columns of a task with these metrics, in CSV order: train_loss, train_<metric>...,
// eval_loss, eval_<metric>..., lr, samples_per_s, data_wait_share, comm_share, seconds.
std::vector<std::string> metricColumns(const std::vector<std::string>& metrics);

struct MetricsRecord {
  std::string type;  // "step" | "epoch"
  int64_t epoch = 0;  // 1-based: the epoch the record belongs to
  int64_t step = 0;   // optimizer steps within it
  int64_t globalStep = 0;
  double wallTime = 0;  // Unix seconds
  // (column, value) of the fields that apply. A value may be NaN (a diverged loss): JSON
  // null, CSV "nan", a NaN point in TensorBoard.
  std::vector<std::pair<std::string, double>> values;

  MetricsRecord& set(const std::string& column, double value) {
    values.emplace_back(column, value);
    return *this;
  }
  std::optional<double> get(const std::string& column) const;
};

class MetricsLog {
 public:
  struct Paths {
    std::string jsonl, csv;
    std::string tensorboard;  // the event files' folder; "" = no TensorBoard output
  };
  // `columns`: the value columns (metricColumns()). `resumedAt` >= 0: a resumed run at that
  // global step; the files are trimmed to it (and TensorBoard told to drop later points);
  // -1: a fresh run, which starts the files anew.
  MetricsLog(Paths paths, std::vector<std::string> columns, int64_t resumedAt);
  ~MetricsLog();

  // Appends and flushes: a crash loses at most the record being written. An output that
  // cannot be written (a full disk) is reported once and left out from then on; training
  // goes on. A value whose column is not one of `columns` is an Error.
  void write(const MetricsRecord& r);
  const std::string& jsonlPath() const { return jsonl_; }

 private:
  // Runs one output's write; on failure, warns and turns that output off.
  template <typename Write>
  void guarded(bool& on, const std::string& what, Write write);

  std::vector<std::string> columns_;
  std::string jsonl_;
  std::string csv_;
  std::unique_ptr<TensorBoardWriter> tb_;
  bool jsonlOn_ = true, csvOn_ = true, tbOn_ = true;
};

// Drops the lines of a metrics file (.jsonl or .csv, whose header stays) whose global step
// is past `globalStep`; the file is replaced atomically. A missing file is left missing.
void trimMetricsFile(const std::string& path, int64_t globalStep);

}  // namespace forge::train
