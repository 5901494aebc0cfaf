#include "distributed/watchdog.h"

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include <pthread.h>

#include "core/log.h"
#include "core/strings.h"
#include "distributed/communicator.h"
#include "distributed/mpi_runtime.h"

namespace forge::dist {
namespace {

constexpr int kReportTag = 7;

double nowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

Watchdog::Watchdog(MPI_Comm world, double timeoutSeconds) : timeout_(timeoutSeconds) {
  // A few reports per deadline: a verdict's records are at most a period old, and a rank
  // silent for several periods is not just slow to be scheduled.
  period_ = std::clamp(timeout_ / 6, 0.2, 1.0);
  silentAfter_ = std::max(2.0, 4 * period_);
  // Long enough for rank 0 to hear of the timeout, judge and abort; short enough that a job
  // whose rank 0 is the stuck one still ends within the deadline + 10 s.
  grace_ = std::min(6.0, std::max(3.0, 3 * period_));
  MPI_Comm_size(world, &size_);
  MPI_Comm_rank(world, &rank_);
  if (size_ < 2 || !(timeout_ < kNoDeadlineSeconds)) return;
  if (MPI_Comm_dup(world, &comm_) != MPI_SUCCESS) {
    log::warn("watchdog", "no channel of its own (MPI_Comm_dup failed): hangs end without a verdict");
    comm_ = MPI_COMM_NULL;
    return;
  }
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  if (rank_ == 0) {
    last_.resize(size_);
    heardAt_.assign(size_, -1.0);
    MPI_Irecv(&incoming_, sizeof incoming_, MPI_BYTE, MPI_ANY_SOURCE, kReportTag, comm_, &recvRequest_);
  }
  thread_ = std::thread([this] { loop(); });
}

Watchdog::~Watchdog() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Watchdog::setReportDir(const std::string& dir) {
  std::lock_guard<std::mutex> lock(mutex_);
  reportDir_ = dir;
  // An earlier run's report must not pass for this one's.
  std::remove((dir + "/hang-report.json").c_str());
}

void Watchdog::timedOut(const std::string& what) {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (trigger_.empty()) trigger_ = what;
    }
    rankStatus().markTimedOut();
    timedOut_ = true;
    cv_.notify_all();
    // The thread ends the job (rank 0's verdict or, failing that, this rank's view); this is
    // the last resort should it be stuck itself.
    std::this_thread::sleep_for(std::chrono::duration<double>(grace_ + 4 * period_ + 2));
  }
  MpiRuntime::abortJob(3);
}

void Watchdog::loop() {
  pthread_setname_np(pthread_self(), "forge-watchdog");  // in top -H, gdb, perf
  if (rank_ != 0) send(false);  // at once: a rank that freezes early has still reported
  double lastTick = nowSeconds();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait_for(lock, std::chrono::duration<double>(period_), [&] { return stop_ || (timedOut_ && timedOutAt_ == 0); });
      if (stop_) break;
    }
    const double tick = nowSeconds();
    if (tick - lastTick > silentAfter_ + period_) {  // this thread did not run: the process was stopped
      frozenFor_ = tick - lastTick;
      frozenAt_ = tick;
    }
    lastTick = tick;
    checkOwnDeadline();
    const bool urgent = timedOut_ && timedOutAt_ == 0;
    if (urgent) timedOutAt_ = nowSeconds();
    if (rank_ == 0) {
      receive();
      std::string trigger;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        trigger = trigger_;
      }
      if (timedOut_) deliverVerdict(trigger);
      for (int r = 1; r < size_; ++r) {
        if (heardAt_[r] >= 0 && last_[r].timedOut) {
          deliverVerdict(concat("rank ", r, "'s deadline passed",
                                last_[r].waitingSeq > 0
                                    ? concat(" in ", collectiveName(static_cast<CollectiveKind>(last_[r].waitingKind)),
                                             " #", last_[r].waitingSeq)
                                    : std::string()));
        }
      }
    } else {
      send(urgent);
      if (timedOut_ && nowSeconds() - timedOutAt_ > grace_) {
        std::lock_guard<std::mutex> lock(mutex_);
        giveOwnView(trigger_);
      }
    }
  }
  closeChannel();
}

// A collective this rank issued more than the deadline ago and has not seen complete is a
// timeout, wherever the main thread is (it may never wait for it: stuck in a forward while
// a gradient bucket is in flight). A little later than the main thread's own deadline, whose
// message names the operation better when it does wait.
void Watchdog::checkOwnDeadline() {
  if (timedOut_) return;
  RankRecord mine = rankStatus().snapshot();
  if (mine.waitingSeq == 0 || mine.inFlightSeconds <= timeout_ + std::max(1.0, 2 * period_)) return;
  const std::string what = concat("timeout in ", collectiveName(static_cast<CollectiveKind>(mine.waitingKind)), " #",
                                  mine.waitingSeq, " after ", static_cast<int>(mine.inFlightSeconds),
                                  " s, seen by the watchdog (the main thread is not waiting for it: it is in ",
                                  phaseName(static_cast<Phase>(mine.phase)), ")");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (trigger_.empty()) trigger_ = what;
  }
  log::error("watchdog", what);
  rankStatus().markTimedOut();
  timedOut_ = true;
}

void Watchdog::send(bool urgent) {
  if (sendRequest_ != MPI_REQUEST_NULL) {
    int done = 0;
    MPI_Test(&sendRequest_, &done, MPI_STATUS_IGNORE);
    // Still in flight: rank 0 is not taking reports (or the link is down); the next period
    // tries again. An urgent one waits a little for it.
    for (int i = 0; !done && urgent && i < 100; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      MPI_Test(&sendRequest_, &done, MPI_STATUS_IGNORE);
    }
    if (!done) return;
  }
  outgoing_ = rankStatus().snapshot();
  MPI_Isend(&outgoing_, sizeof outgoing_, MPI_BYTE, 0, kReportTag, comm_, &sendRequest_);
}

void Watchdog::receive() {
  for (;;) {
    int done = 0;
    MPI_Status st;
    if (MPI_Test(&recvRequest_, &done, &st) != MPI_SUCCESS || !done) return;
    const int from = st.MPI_SOURCE;
    if (from > 0 && from < size_) {
      last_[from] = incoming_;
      heardAt_[from] = nowSeconds();
    }
    MPI_Irecv(&incoming_, sizeof incoming_, MPI_BYTE, MPI_ANY_SOURCE, kReportTag, comm_, &recvRequest_);
  }
}

void Watchdog::deliverVerdict(const std::string& trigger) {
  // A moment for the reports sent as the others' deadlines passed (they passed at about
  // the same time), not more: a late rank moves on meanwhile, and the records must show the
  // job as it was when the deadline passed.
  const double until = nowSeconds() + std::min(0.2, period_);
  while (nowSeconds() < until) {
    receive();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<HeardRecord> records(size_);
  const double now = nowSeconds();
  records[0].record = rankStatus().snapshot();
  records[0].heard = true;
  // This process itself was stopped (SIGSTOP, a frozen node) until just now: the others'
  // deadlines passed while it was; it is the one that did not respond.
  if (now - frozenAt_ < 2 * timeout_ + 2) records[0].ageSeconds = frozenFor_;
  for (int r = 1; r < size_; ++r) {
    records[r].heard = heardAt_[r] >= 0;
    records[r].record = last_[r];
    records[r].ageSeconds = records[r].heard ? now - heardAt_[r] : 0;
  }
  HangVerdict v = judgeHang(records, timeout_, silentAfter_, trigger);
  log::error("hang", v.verdict);
  for (const auto& line : v.table) log::errorLine("hang", line);
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    dir = reportDir_;
  }
  if (!dir.empty()) {
    const std::string path = dir + "/hang-report.json", tmp = path + ".tmp";
    bool written = false;
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << v.json;
      out.flush();
      written = out.good();
    }
    if (written && std::rename(tmp.c_str(), path.c_str()) == 0) {
      log::errorLine("hang", concat("the same in ", path));
    } else {
      std::remove(tmp.c_str());
      log::errorLine("hang", concat("could not write ", path, " (", std::strerror(errno), ")"));
    }
  }
  MpiRuntime::abortJob(3);
}

void Watchdog::giveOwnView(const std::string& trigger) {
  RankRecord mine = rankStatus().snapshot();
  log::error("hang", "no verdict from rank 0 within ", grace_, " s of this rank's timeout (rank 0 may be the stuck ",
             "one, or cut off); this rank's view: ", trigger, "; it is in ", phaseName(static_cast<Phase>(mine.phase)),
             mine.waitingSeq > 0 ? concat(", inside ", collectiveName(static_cast<CollectiveKind>(mine.waitingKind)),
                                          " #", mine.waitingSeq)
                                 : std::string());
  MpiRuntime::abortJob(3);
}

// The clean end of a job: every rank stops reporting, then one bounded barrier, after which
// rank 0 takes what is left in flight, so nothing is pending when MPI finalizes.
void Watchdog::closeChannel() {
  const double until = nowSeconds() + 60;
  int done = 0;
  while (sendRequest_ != MPI_REQUEST_NULL && !done && nowSeconds() < until) {
    MPI_Test(&sendRequest_, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  MPI_Request barrier = MPI_REQUEST_NULL;
  MPI_Ibarrier(comm_, &barrier);
  done = 0;
  while (!done && nowSeconds() < until) {
    if (rank_ == 0) receive();
    MPI_Test(&barrier, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (!done) return;  // a peer never came: leave the channel to MPI_Finalize / the process exit
  if (rank_ == 0) {
    receive();
    MPI_Cancel(&recvRequest_);
    MPI_Wait(&recvRequest_, MPI_STATUS_IGNORE);
  }
  MPI_Comm_free(&comm_);
}

}  // namespace forge::dist
