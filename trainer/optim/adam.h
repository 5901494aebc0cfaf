// optimizer.name: adam and adamw (decoupled weight decay), as torch.optim.Adam / AdamW.
#pragma once

#include "trainer/spec/parts.h"

namespace forge::train {

OptimizerSpec adamOptimizer();
OptimizerSpec adamwOptimizer();

}  // namespace forge::train
