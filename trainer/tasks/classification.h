// Classification: cross-entropy over [batch, classes] logits and integer labels, and the
// fraction of argmax predictions that hit the label.
#pragma once

#include "trainer/spec/parts.h"

namespace forge::train {

LossSpec crossEntropyLoss();  // task.loss: cross_entropy
MetricSpec accuracyMetric();  // task.metrics: [accuracy]

}  // namespace forge::train
