// What a run records, by rank 0, in its run dir:
//   metrics.jsonl  one JSON object per line: a "step" record every log.every_steps optimizer
//                  steps and an "epoch" record after each epoch's evaluation;
//   metrics.csv    the same records, one row each, columns kMetricColumns (empty cell = the
//                  field does not apply, e.g. eval_loss of a step record);
//   tb/            the same values as TensorBoard scalars "<type>/<field>" at global_step.
// A resumed run appends to all three after dropping records past its position.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace forge::train {

class TensorBoardWriter;

// The record fields, in CSV column order. "epoch" is 1-based: the epoch the record belongs
// to; "step" counts optimizer steps within it; shares are fractions of the training time
// since the previous record of the same type.
extern const std::vector<std::string> kMetricColumns;

struct MetricsRecord {
  std::string type;  // "step" | "epoch"
  int64_t epoch = 0;
  int64_t step = 0;
  int64_t globalStep = 0;
  double wallTime = 0;  // Unix seconds
  // The columns after "wall_time"; empty = the field does not apply to this record. A
  // value may be NaN (a diverged loss): JSON null, CSV "nan", a NaN point in TensorBoard.
  std::optional<double> trainLoss, trainAccuracy, evalLoss, evalAccuracy, lr, samplesPerS, dataWaitShare,
      commShare, seconds;

  // (column, value) of the fields that apply, in column order.
  std::vector<std::pair<std::string, double>> values() const;
};

class MetricsLog {
 public:
  // `tensorboard`: also write RUN_DIR/tb/. `resumedAt` >= 0: a resumed run at that global
  // step; the files are trimmed to it (and TensorBoard told to drop later points); -1: a
  // fresh run, which starts the files anew.
  MetricsLog(const std::string& runDir, bool tensorboard, int64_t resumedAt);
  ~MetricsLog();

  // Appends and flushes: a crash loses at most the record being written. An output that
  // cannot be written (a full disk) is reported once and left out from then on; training
  // goes on.
  void write(const MetricsRecord& r);

  const std::string& jsonlPath() const { return jsonl_; }

 private:
  // Runs one output's write; on failure, warns and turns that output off.
  template <typename Write>
  void guarded(bool& on, const std::string& what, Write write);

  std::string jsonl_;
  std::string csv_;
  std::unique_ptr<TensorBoardWriter> tb_;
  bool jsonlOn_ = true, csvOn_ = true, tbOn_ = true;
};

// Drops the lines of a metrics file (.jsonl or .csv, whose header stays) whose global step
// is past `globalStep`; the file is replaced atomically. A missing file is left missing.
void trimMetricsFile(const std::string& path, int64_t globalStep);

}  // namespace forge::train
