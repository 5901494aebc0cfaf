// The end of a session, for people (a table in the log) and for scripts (summary.json):
// fed by values, so any task's metrics appear by name.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace forge::train {

// One rank's training loop this session, per step on average (seconds).
struct RankTiming {
  int rank = 0;
  std::string host;
  int64_t steps = 0;
  double step = 0, commWait = 0, dataWait = 0;
  double pageFaults = 0;  // minor page faults per step (memory the kernel mapped in again)
  double cpu = 0;         // CPU seconds per step, every thread of the rank
  double busy() const { return step - commWait; }  // what the others wait for
};

// The rank that held the others up: the most busy per step; and the share of the other ranks'
// step time spent waiting in collectives (for it, mostly). Nothing with fewer than 2 ranks.
struct Straggler {
  bool known = false;
  RankTiming slowest;
  double fastestBusy = 0;
  double othersWaitingShare = 0;
};
Straggler stragglerOf(const std::vector<RankTiming>& ranks);

struct SessionSummary {
  std::string monitored;        // "eval_accuracy"
  bool monitoredPercent = false;
  double bestMetric = 0;        // NaN: none
  int64_t bestEpoch = 0;        // 0: in an earlier session (or none)
  std::string evalSplit;
  std::vector<std::pair<std::string, double>> finalEval;  // ("loss", ...), metrics
  std::vector<bool> finalEvalPercent;                      // per finalEval entry
  int64_t finalEvalSamples = 0;
  int64_t epochs = 0, globalStep = 0, worldSize = 1;
  std::string fingerprint;  // 16 hex digits
  double seconds = 0, samplesPerS = 0;
  int64_t epochsThisSession = 0;
  // Where the time went, seconds: compute, communication, data wait, checkpoint, evaluation, other.
  double compute = 0, comm = 0, dataWait = 0, checkpoint = 0, evaluation = 0, other = 0;
  std::vector<RankTiming> ranks;  // every rank's, in rank order
};

// Rank 0: the summary table.
void logSessionSummary(const SessionSummary& s);
// Rank 0: RUN_DIR/summary.json, replaced atomically; a failure to write is a warning.
void writeSummaryJson(const std::string& path, const SessionSummary& s);

}  // namespace forge::train
