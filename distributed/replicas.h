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

// Collective, cheap enough for every few hundred steps (a word-wise hash, one all-gather of
// one number; a second of one number per tensor only when they differ): the ranks compare
// their parameters (and buffers when `withBuffers`: they agree only once synchronized).
// Replicas that differ are a CommError (exit 3) naming `when`, the ranks that differ from
// rank 0 and, for each, the first tensor that does.
void checkReplicasAgree(const torch::nn::Module& module, Communicator& comm, bool withBuffers, const std::string& when);

}  // namespace forge::dist
