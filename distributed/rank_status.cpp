#include "distributed/rank_status.h"

#include <unistd.h>

#include <cstring>

namespace forge::dist {

const char* phaseName(Phase p) {
  switch (p) {
    case Phase::kStartup: return "startup";
    case Phase::kDataWait: return "waiting for data";
    case Phase::kForward: return "forward";
    case Phase::kBackward: return "backward";
    case Phase::kOptimizer: return "optimizer step";
    case Phase::kBetweenSteps: return "between steps";
    case Phase::kEvaluation: return "evaluation";
    case Phase::kCheckpoint: return "checkpoint save";
    case Phase::kPreemption: return "preemption agreement";
    case Phase::kEpochEnd: return "end-of-epoch agreement";
    case Phase::kVerify: return "replica verification";
    case Phase::kFinished: return "finished";
  }
  return "unknown";
}

const char* collectiveName(CollectiveKind k) {
  switch (k) {
    case CollectiveKind::kNone: return "none";
    case CollectiveKind::kAllReduce: return "allReduce";
    case CollectiveKind::kBroadcast: return "broadcast";
    case CollectiveKind::kAllGather: return "allGather";
    case CollectiveKind::kBarrier: return "barrier";
  }
  return "none";
}

CollectiveKind collectiveKindOf(const char* name) {
  for (auto k : {CollectiveKind::kAllReduce, CollectiveKind::kBroadcast, CollectiveKind::kAllGather,
                 CollectiveKind::kBarrier}) {
    if (std::strcmp(name, collectiveName(k)) == 0) return k;
  }
  return CollectiveKind::kNone;
}

int64_t RankStatus::nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

RankStatus::RankStatus() { phaseSince_.store(nowNs()); }

void RankStatus::enterPhase(Phase p) {
  // The time first: a reader that sees the new phase with the old time would report a long
  // stay in it.
  phaseSince_.store(nowNs(), std::memory_order_relaxed);
  phase_.store(static_cast<uint8_t>(p), std::memory_order_release);
}

void RankStatus::entered(CollectiveKind kind, uint64_t seq) {
  issuedAt_[seq % kRing].store(nowNs(), std::memory_order_relaxed);
  issuedKind_[seq % kRing].store(static_cast<uint8_t>(kind), std::memory_order_relaxed);
  issuedPhase_[seq % kRing].store(phase_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  enteredKind_.store(static_cast<uint8_t>(kind), std::memory_order_relaxed);
  enteredSeq_.store(seq, std::memory_order_release);
}

void RankStatus::completed(CollectiveKind kind, uint64_t seq) {
  completedKind_.store(static_cast<uint8_t>(kind), std::memory_order_relaxed);
  completedSeq_.store(seq, std::memory_order_release);
}

void RankStatus::markTimedOut() {
  if (timedOut_.exchange(1) != 0) return;
  const uint64_t entered = enteredSeq_.load(std::memory_order_acquire);
  const uint64_t completed = completedSeq_.load(std::memory_order_acquire);
  if (entered > completed) {
    timedOutKind_.store(issuedKind_[(completed + 1) % kRing].load(std::memory_order_relaxed));
    timedOutSeq_.store(completed + 1);
  }
}

RankRecord RankStatus::snapshot() const {
  RankRecord r;
  const int64_t now = nowNs();
  r.rank = rank_;
  r.phase = phase_.load(std::memory_order_acquire);
  r.phaseSeconds = static_cast<double>(now - phaseSince_.load(std::memory_order_relaxed)) * 1e-9;
  r.bucket = bucket_.load(std::memory_order_relaxed);
  r.epoch = epoch_.load(std::memory_order_relaxed);
  r.globalStep = globalStep_.load(std::memory_order_relaxed);
  r.enteredSeq = enteredSeq_.load(std::memory_order_acquire);
  r.enteredKind = enteredKind_.load(std::memory_order_relaxed);
  r.completedSeq = completedSeq_.load(std::memory_order_acquire);
  r.completedKind = completedKind_.load(std::memory_order_relaxed);
  r.timedOut = timedOut_.load(std::memory_order_relaxed);
  if (r.enteredSeq > r.completedSeq) {
    r.waitingSeq = r.completedSeq + 1;
    r.waitingKind = issuedKind_[r.waitingSeq % kRing].load(std::memory_order_relaxed);
    const int64_t issued = issuedAt_[r.waitingSeq % kRing].load(std::memory_order_relaxed);
    r.inFlightSeconds = issued > 0 ? static_cast<double>(now - issued) * 1e-9 : 0.0;
  }
  r.timedOutSeq = timedOutSeq_.load();
  r.timedOutKind = timedOutKind_.load();
  for (int i = 0; i < RankRecord::kRecent && static_cast<uint64_t>(i) < r.enteredSeq; ++i) {
    const uint64_t seq = r.enteredSeq - i;
    r.recentSeq[i] = seq;
    r.recentPhase[i] = issuedPhase_[seq % kRing].load(std::memory_order_relaxed);
    r.recentAge[i] = static_cast<double>(now - issuedAt_[seq % kRing].load(std::memory_order_relaxed)) * 1e-9;
  }
  std::memcpy(r.host, host_, sizeof r.host);
  return r;
}

RankStatus& rankStatus() {
  static RankStatus status;
  return status;
}

void setStatusIdentity(int rank) {
  RankStatus& s = rankStatus();
  s.rank_ = rank;
  char host[sizeof s.host_] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "?");
  std::memcpy(s.host_, host, sizeof s.host_);
  s.host_[sizeof s.host_ - 1] = '\0';
}

}  // namespace forge::dist
