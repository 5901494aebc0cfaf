// Keeps the replicas of a module in step across the ranks of a Communicator, the way
// PyTorch's DistributedDataParallel does:
//   - broadcastState(): parameters and buffers from rank 0, then a fingerprint check that
//     proves every replica identical;
//   - broadcastBuffers(): buffers (BatchNorm running stats) follow rank 0, each step;
//   - gradients in buckets: trainable parameters grouped in reverse registration order
//     (the order backward produces them), each bucket capped in bytes (the first one smaller
//     so communication starts early). A hook after each gradient is accumulated copies it
//     into its bucket; a full bucket is all-reduced (averaged) at once, while backward goes
//     on, by the communicator's thread. Buckets are issued in index order on every rank,
//     never in the order they happen to fill, so ranks always match.
//   - after the first synchronized backward, the buckets are rebuilt once from the order in
//     which gradients really arrived (rank 0's order, so all ranks agree). A checkpoint keeps
//     that order (rebuiltOrder()); a resumed run adopts it (adoptOrder()), so its first step
//     reduces in the same buckets as the uninterrupted run's step did.
//
// Per step: beginBackward(sync) -> loss.backward() -> finishBackward(). With sync = false
// (the micro-batches of gradient accumulation before the last) nothing is communicated and
// gradients just accumulate in .grad. Every method is a collective or runs between
// collectives; call them in the same order on every rank, from one thread.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <string>
#include <vector>

#include "distributed/communicator.h"

namespace forge::dist {

struct SyncOptions {
  size_t bucketCapBytes = 25u << 20;
  size_t firstBucketCapBytes = 1u << 20;
  bool rebuildBuckets = true;
  // Start each bucket's all-reduce while backward goes on. Pays off when communication has
  // its own resources (NCCL, a NIC, spare cores); when every core of the rank computes,
  // MPI's progress loop competes with backward for them and launching the buckets right
  // after backward is as fast (config distributed.overlap).
  bool overlap = true;
  // A trainable parameter that gets no gradient in a synchronized step is an error naming it,
  // unless this is set: then it contributes zeros and its bucket still completes.
  bool allowUnusedParameters = false;
};

class GradientSynchronizer {
 public:
  GradientSynchronizer(std::shared_ptr<torch::nn::Module> module, Communicator& comm, SyncOptions options = {});
  ~GradientSynchronizer();  // removes the hooks; never throws
  GradientSynchronizer(const GradientSynchronizer&) = delete;
  GradientSynchronizer& operator=(const GradientSynchronizer&) = delete;

  // Collective: parameters and buffers from rank 0; then verifies the replicas (CommError
  // naming the ranks that differ). Returns the common fingerprint.
  uint64_t broadcastState();
  // Blocking: buffers from rank 0 now.
  void broadcastBuffers();
  // The per-step form of the same contract, without its latency: afterForward() snapshots
  // rank 0's buffers (BatchNorm statistics are final once forward is done) and starts their
  // broadcast, which then overlaps backward and the optimizer step; beforeForward() waits
  // for it and installs the values. So every forward starts from rank 0's buffers as they
  // were after the previous forward, as with DDP's broadcast_buffers. Call beforeForward()
  // (or flushBuffers()) before anything else reads the buffers, e.g. evaluation.
  void beforeForward();
  void afterForward();
  void flushBuffers() {
    settle();
    beforeForward();
  }

  // Zeroes every gradient in place. Gradients are views into the buckets (backward writes
  // straight into them); use this instead of an optimizer's zero_grad(), whose default
  // (set_to_none) replaces them and costs a copy in and out of the buckets each step.
  void zeroGrad();

  // One backward pass, synchronized or not: beginBackward(sync), loss.backward(),
  // finishBackward(). The loss is scaled by 1 / world size on its way in, so gradients
  // arrive pre-averaged and the all-reduce is a plain sum: no separate division pass over
  // every gradient (free, since autograd carries the scalar through). For gradient
  // accumulation call it for every micro-batch, with sync = true on the last one only.
  void backward(const at::Tensor& loss, bool sync = true);

  // The same in three calls, for callers that run backward themselves: gradients are
  // averaged after the all-reduce instead.
  void beginBackward(bool sync = true);
  // Waits (deadline: the communicator's timeout) for every bucket and writes the averaged
  // gradients into .grad. Throws CommTimeout / CommError, or Error naming unused parameters.
  // On a backend with streams (NCCL) the wait is the compute stream's, not the host's: the
  // optimizer step is queued behind the buckets' completion events and the host goes on;
  // the next beginBackward() or settle() checks on the host that they completed.
  void finishBackward();
  // Blocks until the last step's buckets have completed (deadline: the communicator's
  // timeout), reporting errors; at once when they have. Called by beginBackward() and
  // flushBuffers(); call it before a long pause in collectives (evaluation, a checkpoint).
  void settle();

  // Which parameters each bucket holds (names, in bucket order); for logs and tests.
  std::vector<std::vector<std::string>> bucketLayout() const;

  // The order the buckets were built from once it came from gradients' arrival (rebuilt
  // after the first synchronized step, or adopted): indices into the trainable parameters in
  // registration order, first filled first. Empty while the buckets still follow the reverse
  // registration order. Local, no communication.
  std::vector<int64_t> rebuiltOrder() const;
  // Builds the buckets from `order` (what rebuiltOrder() returned in the interrupted run) and
  // skips the rebuild after the first step. Between steps only; every rank must pass the same
  // order (they all read it from one checkpoint). Returns false and changes nothing when
  // `order` is not a permutation of this module's trainable parameters (another model), or
  // when rebuilding is off (SyncOptions::rebuildBuckets).
  bool adoptOrder(const std::vector<int64_t>& order);

  // Timing of the last synchronized backward, for tests of overlap and for metrics.
  struct Timeline {
    Clock::time_point backwardBegin{};
    Clock::time_point lastGradientReady{};
    std::vector<Clock::time_point> bucketStarted;  // when the communicator began each bucket
  };
  const Timeline& lastTimeline() const { return timeline_; }
  double commWaitSeconds() const { return commWaitSeconds_; }

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  Timeline timeline_;
  double commWaitSeconds_ = 0;
};

}  // namespace forge::dist
