// The run configuration: YAML file + `--set key=value` overrides -> a typed, validated struct.
// Validation happens before any work; every problem is a ConfigError that names the file and
// line (or the --set option), the key, and what would be valid.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace forge::train {

struct RunConfig {
  std::string dir = "runs/default";
  uint64_t seed = 0;
  int64_t epochs = 1;
  int threads = 0;  // intra-op threads per rank; 0 = cores on the node / ranks on the node
  // auto: a GPU per rank when the node has enough of them, else the CPU | cpu | cuda
  std::string device = "auto";
  // fp32 | bf16: CUDA autocast to bfloat16 for forward and loss; weights, gradients and
  // optimizer state stay fp32 (GPU-only)
  std::string precision = "fp32";
};

struct ModelConfig {
  std::string name = "mlp";
  int64_t inFeatures = 784;
  int64_t hidden = 256;
  int64_t numClasses = 10;
  double dropout = 0.0;
  std::vector<int64_t> inputShape = {1, 28, 28};  // cnn: C x H x W
  std::vector<int64_t> channels = {16, 32};       // cnn: output channels of its conv layers
  std::string initFrom;  // a forge checkpoint or a Python state dict to start from ("" = random)
};

struct NormalizeConfig {
  double scale = 1.0;               // multiplies raw features first (1/255 for uint8 images)
  std::vector<double> mean{0.0};    // one number, one per channel (C x H x W samples) or one per feature
  std::vector<double> std{1.0};
  // config: mean and std as given | auto: per-feature mean and std of the training split,
  // computed once (each rank sums its share) and stored in <run.dir>/feature_stats.h5
  std::string stats = "config";
};

struct DataConfig {
  std::vector<std::string> paths;  // data.path: a file, or a list of files / glob patterns
  std::string trainSplit = "train";
  std::string evalSplit = "test";
  std::string features = "features";
  std::string labels = "labels";
  int64_t batchSize = 64;       // per rank
  int64_t evalBatchSize = 1000; // per rank
  bool shuffle = true;
  bool dropLast = false;
  int64_t prefetch = 4;         // batches built ahead of training, at least (data/batch_loader.h)
  double bufferMb = 64;         // read buffer per rank: two shuffle windows of half this each
  std::string nonFinite = "error";  // NaN / Inf in features: error (naming the sample) | skip
  NormalizeConfig normalize;
};

struct OptimizerConfig {
  std::string name = "sgd";  // sgd | adam | adamw
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  double weightDecay = 0.0;
  std::vector<double> betas = {0.9, 0.999};
  double eps = 1e-8;
  int64_t accumulateSteps = 1;  // micro-batches per optimizer step; no communication between
};

struct ScheduleConfig {
  std::string name = "constant";  // constant | step | cosine
  int64_t warmupSteps = 0;        // linear warmup from 0, applies to every schedule
  int64_t stepEpochs = 1;         // step: multiply by gamma every step_epochs epochs
  double gamma = 0.1;
  double minLr = 0.0;             // cosine: the floor
};

struct CheckpointConfig {
  int64_t everyEpochs = 1;  // 0 = off
  int64_t everySteps = 0;   // 0 = off
  int64_t keepLast = 3;     // 0 = keep all
  bool async = false;       // write in a background thread; training stalls only for a copy
};

struct DistributedConfig {
  std::string backend = "auto";    // auto: nccl on CUDA, mpi on the CPU | mpi | nccl
  double timeoutS = 300;           // deadline of every collective
  double bucketCapMb = 25;         // gradient bucket size cap
  double firstBucketCapMb = 1;     // the first bucket, smaller so communication starts early
  bool rebuildBuckets = true;      // once, from the first backward's gradient arrival order
  bool overlap = true;             // all-reduce buckets while backward goes on
  bool allowUnusedParameters = false;
  bool broadcastBuffers = true;    // buffers (BatchNorm statistics) follow rank 0 each step
};

struct LogConfig {
  // auto: a live bar on a terminal, plain lines otherwise (log files) | bar | lines | off
  std::string progress = "auto";
  double everyS = 10;         // lines mode: seconds between progress lines
  int64_t everySteps = 50;    // a step record in metrics.jsonl / .csv / TensorBoard every N steps; 0 = off
  bool tensorboard = true;    // RUN_DIR/tb/events.out.tfevents.*
};

struct Config {
  RunConfig run;
  ModelConfig model;
  DataConfig data;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  CheckpointConfig checkpoint;
  DistributedConfig distributed;
  LogConfig log;

  std::string sourcePath;  // the YAML file it came from
  std::vector<std::string> overrides;  // the --set options, as given
  std::string resolved;    // the YAML text after overrides (saved with the run)
};

// Reads, applies overrides ("section.key=value", value parsed as YAML) and validates.
Config loadConfig(const std::string& path, const std::vector<std::string>& overrides = {});
Config parseConfig(const std::string& yamlText, const std::string& sourceName,
                   const std::vector<std::string>& overrides = {});

// Every valid dotted key, e.g. "optimizer.lr" (for help texts and suggestions).
std::vector<std::string> configKeys();

}  // namespace forge::train
