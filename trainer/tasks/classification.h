// Classification: cross-entropy over [batch, classes] logits and integer labels (or over
// [batch, positions, classes] and [batch, positions]: language modelling's next tokens),
// the fraction of argmax predictions that hit the label, and top-5 accuracy.
#pragma once

#include "trainer/spec/parts.h"

namespace forge::train {

LossSpec crossEntropyLoss();      // task.loss: cross_entropy
MetricSpec accuracyMetric();      // task.metrics: [accuracy]
MetricSpec top5AccuracyMetric();  // task.metrics: [top5_accuracy]

}  // namespace forge::train
