// Building a registered model as a user's mistake cannot crash: a model too large for the
// node (model.hidden: 1e11) is a config error that says what it needs and what there is.
#pragma once

#include <cstdint>
#include <string>

#include "trainer/spec/model.h"
#include "trainer/spec/parts.h"

namespace forge::train {

// What this node can give a process now: MemAvailable, or the cgroup's limit when lower.
int64_t nodeMemoryAvailableBytes();

// `spec.make(options)`, with an allocation failure turned into a ConfigError naming the
// section's values, the bytes asked for and the node's memory. `copies`: how many times the
// parameters' size the job needs on this node (weights, gradients, optimizer state, times the
// ranks on the node); a model whose estimate exceeds the node's memory is refused the same way.
ModelHandle buildRegisteredModel(const ModelSpec& spec, const Options& options, int64_t copies);

}  // namespace forge::train
