// optimizer.name: sgd (momentum, dampening, nesterov), as torch.optim.SGD.
#pragma once

#include "trainer/spec/parts.h"

namespace forge::train {

OptimizerSpec sgdOptimizer();

}  // namespace forge::train
