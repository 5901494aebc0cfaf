// An exponential moving average of the weights (config section ema): after every
// ema.every_steps-th optimizer step, ema = decay * ema + (1 - decay) * weights, on every rank
// (the weights are identical on every rank, so are the averages: no communication). Saved as
// the checkpoint field ema_state_dict, a full state dict (the averaged parameters, the
// model's buffers as saved) that Python reads with weights_only=True and `forge eval --ema`
// evaluates; a resumed run continues the average from it. With ema.evaluate, each epoch's
// evaluation is followed by one of the averaged weights (eval_ema_* in the epoch record).
#pragma once

#include <memory>

#include "trainer/engine/observer.h"

namespace forge::train {

class Trainer;

// The checkpoint field of the averaged weights.
inline constexpr const char* kEmaField = "ema_state_dict";

// The observer (also a StatefulPart) when cfg.ema.decay > 0, else nullptr. Every rank adds
// it; with ema.evaluate its afterEpoch is a collective.
std::unique_ptr<LoopObserver> makeWeightAverage(Trainer& trainer);

}  // namespace forge::train
