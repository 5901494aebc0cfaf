// Regression: float targets of shape [batch] or [batch, D...]; the model's output has as many
// values per sample (an output of [batch, 1] goes with targets of [batch]).
#pragma once

#include "trainer/spec/parts.h"

namespace forge::train {

LossSpec mseLoss();    // task.loss: mse
LossSpec huberLoss();  // task.loss: huber (delta 1)
MetricSpec mseMetric();  // mean squared error over all target values
MetricSpec maeMetric();  // mean absolute error
MetricSpec r2Metric();   // coefficient of determination, averaged over the target's values

}  // namespace forge::train
