// A part of the training state that a checkpoint carries besides the model, the optimizer
// and the position (trainer/engine/train_state.h): the gradient guard's counters, the EMA
// weights, the checkpoint policy's bookkeeping. Each saves itself under one top-level field
// of the checkpoint (checkpoint/checkpoint.h) and loads itself back on resume, so that a run
// resumed anywhere continues as if it had never stopped; the loop names none of them.
#pragma once

#include <ATen/core/ivalue.h>

#include <string>

namespace forge::train {

class StatefulPart {
 public:
  virtual ~StatefulPart() = default;
  // The checkpoint field the part's state goes under ("grad_guard", "ema_state_dict").
  virtual std::string field() const = 0;
  // The state as a dict of tensors and scalars that Python reads with weights_only=True.
  // Copies: the caller may write them in the background while training goes on. Local (no
  // collectives); the trainer calls it on rank 0 when saving.
  virtual c10::IValue stateDict() const = 0;
  // The inverse, on every rank alike, before the first step of a resumed run. `state` is
  // None when the checkpoint has no such field (written without the part, or by an earlier
  // version): the part then keeps its fresh state. CheckpointError naming `source` when the
  // state does not fit.
  virtual void loadStateDict(const c10::IValue& state, const std::string& source) = 0;
};

}  // namespace forge::train
