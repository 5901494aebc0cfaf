// The run dir's layout, in one place: every file forge writes for a run, by role.
//   config.yaml        the config as resolved (file + overrides)
//   forge.log          what rank 0 printed (sessions of a resumed run follow each other)
//   metrics.jsonl/.csv step and epoch records (trainer/report/metrics_log.h)
//   tb/                TensorBoard event files
//   summary.json       the end-of-run summary of the last session that trained
//   feature_stats.h5   data.normalize.stats: auto's per-feature statistics
//   checkpoints/       ckpt-e<epoch>-n<samples>.pt and best.pt (checkpoint/checkpoint_dir.h)
#pragma once

#include <string>

namespace forge::train {

class RunDir {
 public:
  explicit RunDir(std::string root) : root_(std::move(root)) {}

  const std::string& root() const { return root_; }
  std::string config() const { return file("config.yaml"); }
  std::string log() const { return file("forge.log"); }
  std::string summary() const { return file("summary.json"); }
  std::string featureStats() const { return file("feature_stats.h5"); }
  std::string checkpoints() const { return file("checkpoints"); }
  std::string metricsJsonl() const { return file("metrics.jsonl"); }
  std::string metricsCsv() const { return file("metrics.csv"); }
  std::string tensorboard() const { return file("tb"); }

  // Rank 0, before training: creates the folders (ConfigError naming run.dir when it
  // cannot) and writes config.yaml.
  void create(const std::string& resolvedConfig) const;

 private:
  std::string file(const char* name) const;
  std::string root_;
};

}  // namespace forge::train
