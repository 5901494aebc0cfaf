// Where this rank is, kept so that a hang can be explained: the phase of the training loop,
// the last collective the rank entered and the last one that completed, with times. Written
// by the main thread (phases) and by the communicator (collectives) with relaxed atomic
// stores, a few per step; read at any moment by the watchdog thread (distributed/watchdog.h),
// which never takes a lock the main thread could be holding when it hangs.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>

namespace forge::dist {

enum class Phase : uint8_t {
  kStartup,
  kDataWait,
  kForward,
  kBackward,
  kOptimizer,
  kBetweenSteps,
  kEvaluation,
  kCheckpoint,
  kPreemption,
  kEpochEnd,
  kVerify,
  kFinished,
};
const char* phaseName(Phase p);  // "evaluation", "waiting for data", ...

enum class CollectiveKind : uint8_t { kNone, kAllReduce, kBroadcast, kAllGather, kBarrier };
const char* collectiveName(CollectiveKind k);  // "allReduce", ... ("none")
CollectiveKind collectiveKindOf(const char* name);

// The fixed-size record a rank reports (also its wire format on the watchdog's channel).
struct RankRecord {
  int32_t rank = 0;
  uint8_t phase = 0;           // Phase
  uint8_t enteredKind = 0;     // CollectiveKind of the last collective issued
  uint8_t completedKind = 0;   // ... and of the last one completed
  uint8_t timedOut = 0;        // this rank's deadline has passed
  int32_t bucket = -1;         // in backward: the last gradient bucket launched
  uint8_t waitingKind = 0;     // the oldest collective issued and not completed (kNone: none)
  uint8_t pad[3] = {};
  uint64_t enteredSeq = 0;     // sequence numbers on the training communicator
  uint64_t completedSeq = 0;
  uint64_t waitingSeq = 0;     // 0: none in flight
  // The collective this rank was waiting in when its deadline passed (0: not timed out);
  // kept as it was then, though the collective may complete later.
  uint64_t timedOutSeq = 0;
  uint8_t timedOutKind = 0;
  // The last kRecent collectives entered: sequence number, seconds since, and the phase the
  // rank was in when it entered (so a rank that arrived late can be named after it arrived).
  static constexpr int kRecent = 8;
  uint8_t recentPhase[kRecent] = {};
  uint64_t recentSeq[kRecent] = {};
  double recentAge[kRecent] = {};
  double phaseSeconds = 0;     // in the current phase, when the record was taken
  double inFlightSeconds = 0;  // since the oldest collective not yet completed was issued (0: none)
  int64_t epoch = 0;           // counted from 1, as in the progress lines
  int64_t globalStep = 0;
  char host[48] = {};
};

class RankStatus {
 public:
  RankStatus();

  void enterPhase(Phase p);
  Phase phase() const { return static_cast<Phase>(phase_.load(std::memory_order_relaxed)); }
  void setBucket(int bucket) { bucket_.store(bucket, std::memory_order_relaxed); }
  int64_t globalStep() const { return globalStep_.load(std::memory_order_relaxed); }
  void setStep(int64_t epoch, int64_t globalStep) {
    epoch_.store(epoch, std::memory_order_relaxed);
    globalStep_.store(globalStep, std::memory_order_relaxed);
  }
  // Communicator hooks: a collective was issued (any thread that issues), and completed (the
  // thread that sees it complete). Sequence numbers grow by one per collective.
  void entered(CollectiveKind kind, uint64_t seq);
  void completed(CollectiveKind kind, uint64_t seq);
  // Once: the collective being waited in is kept as the one the deadline passed in.
  void markTimedOut();

  // A consistent-enough copy for a report (fields are read one by one; a hang keeps them
  // still, which is when they matter).
  RankRecord snapshot() const;

 private:
  static int64_t nowNs();

  std::atomic<uint8_t> phase_{0};
  std::atomic<int64_t> phaseSince_{0};
  std::atomic<int32_t> bucket_{-1};
  std::atomic<int64_t> epoch_{0}, globalStep_{0};
  std::atomic<uint64_t> enteredSeq_{0}, completedSeq_{0};
  std::atomic<uint8_t> enteredKind_{0}, completedKind_{0};
  std::atomic<uint8_t> timedOut_{0};
  // When each of the last kRing collectives was issued, by sequence number modulo kRing: the
  // age of the oldest one in flight (buckets overlap backward, so several may be).
  static constexpr size_t kRing = 64;
  std::array<std::atomic<int64_t>, kRing> issuedAt_{};
  std::array<std::atomic<uint8_t>, kRing> issuedKind_{};
  std::array<std::atomic<uint8_t>, kRing> issuedPhase_{};
  std::atomic<uint64_t> timedOutSeq_{0};
  std::atomic<uint8_t> timedOutKind_{0};
  int32_t rank_ = 0;
  char host_[48] = {};

  friend RankStatus& rankStatus();
  friend void setStatusIdentity(int rank);
};

// The process's record (one per process: one rank per process).
RankStatus& rankStatus();
// Rank and host name, once the rank is known.
void setStatusIdentity(int rank);

// Sets a phase for a scope and restores the previous one on the way out, except when an
// exception leaves it: the phase a timeout was raised in is the one a verdict must name.
class PhaseScope {
 public:
  explicit PhaseScope(Phase p) : prev_(rankStatus().phase()), exceptions_(std::uncaught_exceptions()) {
    rankStatus().enterPhase(p);
  }
  ~PhaseScope() {
    if (std::uncaught_exceptions() == exceptions_) rankStatus().enterPhase(prev_);
  }
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  Phase prev_;
  int exceptions_;
};

}  // namespace forge::dist
