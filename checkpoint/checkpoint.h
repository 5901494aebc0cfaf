// What a forge checkpoint holds and how it maps onto the file, a dict that Python's
// torch.load(path, weights_only=True) reads:
//   model_state_dict      {name: tensor}  parameters and buffers, PyTorch names
//   optimizer_state_dict  {"state": {param index: {...}}, "param_groups": [{..., "params": [...]}]}
//   epoch                 epochs completed
//   step, global_step     steps done within the current epoch / since the start
//   epoch_samples         samples consumed within the current epoch, over all ranks: with
//                         epoch, the training progress (checkpoint/progress.h), which unlike
//                         steps means the same at any world size
//   best_metric, best_metric_name
//   world_size, config (resolved YAML text), forge_version
//   rng_states            [uint8 tensor per rank]: the generators dropout draws from
//   lr_schedule           {name, base_lr, warmup_steps, ..., global_step, lr}: the schedule
//                         and where it stands (the LR is a pure function of these)
//   sampler               {seed, epoch, position, world_size, shuffle, drop_last, window,
//                         samples_per_rank}: the data order and how far each rank got in it
//   bucket_order          [int]: the gradient synchronizer's bucket order, rebuilt from the
//                         gradients' arrival (indices of trainable parameters in registration
//                         order); absent before the first synchronized step and at 1 rank
//   <part>                the state of each of the trainer's stateful parts, one top-level
//                         field each (e.g. grad_guard, ema_state_dict): any field not named
//                         above is one (checkpoint/fields.h lists the known names)
//   checksum              FNV-1a over the fields above (tensor bytes included)
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/progress.h"
#include "checkpoint/torch_zip.h"

namespace forge::ckpt {

struct Checkpoint {
  std::vector<std::pair<std::string, at::Tensor>> modelState;
  c10::IValue optimizerState;  // already in torch.optim's layout (built by the trainer)
  int64_t epoch = 0;
  int64_t step = 0;
  int64_t globalStep = 0;
  // Samples consumed in the current epoch over all ranks; -1: not recorded (files written
  // before the field existed), and progressOf() derives it from the sampler position (per
  // rank) times the world size, i.e. step * world size * batch size * accumulate_steps.
  int64_t epochSamples = -1;
  double bestMetric = std::nan("");
  std::string bestMetricName;
  int64_t worldSize = 1;
  std::string config;
  std::string forgeVersion;
  // Each rank's CPU generator state (uint8 tensors, rank order); empty when not recorded.
  std::vector<at::Tensor> rngStates;
  // {str: scalar} dicts (None when not recorded, as in checkpoints of earlier versions).
  c10::IValue schedule;
  c10::IValue sampler;
  // The synchronizer's rebuilt bucket order (distributed/gradient_synchronizer.h); empty
  // when not recorded.
  std::vector<int64_t> bucketOrder;
  // The stateful parts' states by field name (sorted by name when hashed). A dict of tensors
  // or scalars, saved as it is: Python reads each with weights_only=True.
  std::vector<std::pair<std::string, c10::IValue>> parts;
  // The part saved under `name`; None when the file has none (written without that part).
  c10::IValue part(const std::string& name) const;
};

c10::IValue toIValue(const Checkpoint& ck);
// Verifies keys, types and the checksum; CheckpointError naming `source` otherwise. `crcs`:
// the tensors' CRC-32s where the caller knows them already (checkpoint/torch_zip.h).
Checkpoint fromIValue(const c10::IValue& value, const std::string& source, const RecordCrcs& crcs = RecordCrcs());

// Where the checkpoint stands: (epoch, epochSamples, derived when not recorded).
// CheckpointError naming `source` when a file of an early version records no sampler
// position for a mid-epoch step.
Progress progressOf(const Checkpoint& ck, const std::string& source);

// Serialized bytes <-> checkpoint. decode() verifies the container (checkpoint/torch_zip.h),
// then the fields and the checksum; a damaged file gets the same message wherever it is read.
std::vector<char> encode(const Checkpoint& ck);
Checkpoint decode(const std::vector<char>& bytes, const std::string& source);
// Whether a torch archive's pickle is a forge checkpoint's (true for damaged ones too), as
// opposed to, say, a state dict saved by Python.
bool holdsForgeCheckpoint(const std::vector<char>& bytes);

// Atomic save (checkpoint/atomic_file.h) and verified load. Any rank may call them; the
// trainer saves from rank 0 only.
void save(const Checkpoint& ck, const std::string& path);
Checkpoint load(const std::string& path);

}  // namespace forge::ckpt
