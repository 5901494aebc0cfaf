// Language modelling: [batch, positions, vocabulary] logits against the next tokens
// [batch, positions] (the loss is cross_entropy, per token). Metrics per token.
#pragma once

#include "trainer/spec/parts.h"

namespace forge::train {

MetricSpec perplexityMetric();     // exp(mean cross-entropy per token)
MetricSpec bitsPerTokenMetric();   // mean cross-entropy per token in bits
MetricSpec tokenAccuracyMetric();  // fraction of positions whose highest logit is the next token

}  // namespace forge::train
