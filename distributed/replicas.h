// Proof that replicas are identical: a fingerprint of a module's parameters and buffers
// (FNV-1a over their bytes, in registration order) compared across ranks.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>

#include "distributed/communicator.h"

namespace forge::dist {

// Local, any rank.
uint64_t stateFingerprint(const torch::nn::Module& module);

// Collective: gathers every rank's fingerprint. Returns it when all agree; throws CommError
// naming the ranks that differ from rank 0 otherwise.
uint64_t verifyReplicas(const torch::nn::Module& module, Communicator& comm);

}  // namespace forge::dist
