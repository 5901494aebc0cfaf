// The names of a checkpoint's top-level fields, in one place: the writer, the reader and
// every tool that reads a checkpoint (forge's or Python's) agree on these.
#pragma once

#include <string>

namespace forge::ckpt::fields {

inline constexpr const char* kModel = "model_state_dict";
inline constexpr const char* kOptimizer = "optimizer_state_dict";
inline constexpr const char* kEpoch = "epoch";
inline constexpr const char* kStep = "step";
inline constexpr const char* kGlobalStep = "global_step";
inline constexpr const char* kEpochSamples = "epoch_samples";
inline constexpr const char* kBestMetric = "best_metric";
inline constexpr const char* kBestMetricName = "best_metric_name";
inline constexpr const char* kWorldSize = "world_size";
inline constexpr const char* kConfig = "config";
inline constexpr const char* kForgeVersion = "forge_version";
inline constexpr const char* kRngStates = "rng_states";
inline constexpr const char* kSchedule = "lr_schedule";
inline constexpr const char* kSampler = "sampler";
inline constexpr const char* kBucketOrder = "bucket_order";
inline constexpr const char* kChecksum = "checksum";

// Whether `name` is one of the fields above; any other top-level field is a stateful part's.
inline bool isKnown(const std::string& name) {
  for (const char* k : {kModel, kOptimizer, kEpoch, kStep, kGlobalStep, kEpochSamples, kBestMetric, kBestMetricName,
                        kWorldSize, kConfig, kForgeVersion, kRngStates, kSchedule, kSampler, kBucketOrder, kChecksum}) {
    if (name == k) return true;
  }
  return false;
}

}  // namespace forge::ckpt::fields
