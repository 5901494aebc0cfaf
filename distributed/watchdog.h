// A thread per rank that turns a hang into a verdict naming the rank that caused it.
//
// Every rank's thread sends its record (distributed/rank_status.h) to rank 0 a few times per
// deadline over a communicator of its own, so the channel works while the training one is
// stuck, and while the main thread is stuck anywhere (a user's forward, a kernel, a read).
// The deadline is enforced here too: a collective in flight for longer than the timeout
// counts as a timeout whether or not the main thread waits for it.
//
// When any rank's deadline passes, rank 0 judges from the freshest records
// (distributed/hang_verdict.h), prints the verdict and a line per rank, writes
// hang-report.json in the run dir and ends the job with exit 3. A rank that hears nothing
// from rank 0 within a grace period (rank 0 is the stuck one, or cut off) prints its own view
// and ends the job itself.
#pragma once

#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "distributed/hang_verdict.h"

namespace forge::dist {

class Watchdog {
 public:
  // Collective over `world` (duplicates it). With one rank there is nothing to watch and no
  // thread is started.
  Watchdog(MPI_Comm world, double timeoutSeconds);
  // Collective when all ranks get here (a bounded barrier on the watchdog's channel, so no
  // report is left in flight); never throws.
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Rank 0: the folder hang-report.json goes to (the run dir, once it exists).
  void setReportDir(const std::string& dir);
  // Main thread, after its own deadline passed (`what`: its CommTimeout message): lets rank 0
  // deliver the verdict, then ends the job with exit 3.
  [[noreturn]] void timedOut(const std::string& what);

  // Seconds between reports, and the silence after which a rank counts as unresponsive.
  double period() const { return period_; }
  double silentAfter() const { return silentAfter_; }

 private:
  void loop();
  void send(bool urgent);
  void receive();
  void checkOwnDeadline();
  [[noreturn]] void deliverVerdict(const std::string& trigger);
  [[noreturn]] void giveOwnView(const std::string& trigger);
  void closeChannel();

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  double timeout_;
  double period_;
  double silentAfter_;
  double grace_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::string reportDir_;
  std::string trigger_;             // why this rank's deadline passed (under mutex_)
  std::atomic<bool> timedOut_{false};
  double timedOutAt_ = 0;           // thread only: when it first saw timedOut_
  double frozenFor_ = 0, frozenAt_ = -1e9;  // thread only: the last time it did not run for long
  // Rank != 0: the report in flight.
  MPI_Request sendRequest_ = MPI_REQUEST_NULL;
  RankRecord outgoing_;
  // Rank 0: the posted receive and what every rank last said.
  MPI_Request recvRequest_ = MPI_REQUEST_NULL;
  RankRecord incoming_;
  std::vector<RankRecord> last_;
  std::vector<double> heardAt_;     // seconds on rank 0's clock; < 0: never
};

}  // namespace forge::dist
