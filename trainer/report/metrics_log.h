// What a run records, by rank 0, in its run dir (the paths come from trainer/engine/run_dir.h):
//   metrics.jsonl  one JSON object per line: a "step" record every log.every_steps optimizer
//                  steps and an "epoch" record after each epoch's evaluation;
//   metrics.csv    the same records, one row each, columns "type, epoch, step, epoch_samples,
//                  global_step, wall_time" then the value columns (empty cell = the field
//                  does not apply, e.g. eval_loss of a step record);
//   tb/            the same values as TensorBoard scalars "<type>/<column>" at global_step.
// A resumed run appends to all three after dropping the records past its position, by
// training progress (epoch, samples in it), as checkpoints are ordered: global steps count
// differently after a change of world size.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "checkpoint/progress.h"

namespace forge::train {

class TensorBoardWriter;

// Where a resumed run picks up: its progress, and its global step (TensorBoard's axis, and
// the order of records that carry no epoch_samples, as earlier versions wrote them).
struct ResumePoint {
  ckpt::Progress progress;
  int64_t globalStep = 0;
};

// The value columns of a task with these metrics, in CSV order: train_loss, train_<metric>...,
// eval_loss, eval_<metric>..., lr, samples_per_s, data_wait_share, comm_share, seconds,
// grad_norm, skipped_steps (the last two in step records only).
std::vector<std::string> metricColumns(const std::vector<std::string>& metrics);

struct MetricsRecord {
  std::string type;  // "step" | "epoch"
  int64_t epoch = 0;  // 1-based: the epoch the record belongs to
  int64_t step = 0;   // optimizer steps within it
  // Samples consumed in that epoch over all ranks at the record (an epoch record: all of
  // the epoch's): with `epoch`, the record's progress.
  int64_t epochSamples = 0;
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
  // `columns`: the value columns (metricColumns()). `resumedAt`: where a resumed run picks up;
  // the files are trimmed to it (and TensorBoard told to drop later points); nullopt: a
  // fresh run, which starts the files anew.
  MetricsLog(Paths paths, std::vector<std::string> columns, const std::optional<ResumePoint>& resumedAt);
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

// Whether a record of an earlier session lies at or before `at`: an epoch record when its
// epoch is complete there, a step record by (its epoch, its epoch_samples); one without
// epoch_samples (earlier versions) within the resumed epoch, by its global step.
bool recordAtOrBefore(const std::string& type, int64_t epoch, std::optional<int64_t> epochSamples,
                      int64_t globalStep, const ResumePoint& at);

// A record identified as TensorBoard holds it: type, global step and wall time.
struct RecordId {
  std::string type;
  int64_t globalStep;
  double wallTime;
  bool operator<(const RecordId& o) const {
    return std::tie(type, globalStep, wallTime) < std::tie(o.type, o.globalStep, o.wallTime);
  }
};
struct Trimmed {
  std::vector<RecordId> dropped;
  int64_t lastKeptStep = -1;  // the highest global step of a record kept
};
// Drops the lines of a metrics file (.jsonl or .csv, whose header stays) of records past
// `at` (recordAtOrBefore); the file is replaced atomically. A missing file is left missing.
Trimmed trimMetricsFile(const std::string& path, const ResumePoint& at);

}  // namespace forge::train
