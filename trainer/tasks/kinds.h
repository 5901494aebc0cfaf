// task.name: what kind of learning a run does. A kind fixes what the targets are (the data
// layout it reads: data/source.h) and the loss and metrics a run gets when task.loss and
// task.metrics are not given. The loss and metrics themselves are registered parts like a
// user's (trainer/spec/registry.h); any of them may be named with any kind.
#pragma once

#include <string>
#include <vector>

#include "data/source.h"

namespace forge::train {

struct TaskKind {
  std::string name;
  data::Targets targets;
  std::string loss;                  // task.loss when not given
  std::vector<std::string> metrics;  // task.metrics when not given
  std::string help;
};

// classification, regression, language_model.
const std::vector<TaskKind>& taskKinds();
// Null when there is no such kind.
const TaskKind* findTaskKind(const std::string& name);

}  // namespace forge::train
