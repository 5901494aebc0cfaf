// Training progress on rank 0. On a terminal: a live line with a bar that is redrawn in
// place, at most a few times a second. Elsewhere (a Slurm log file, a pipe): a plain line
// every log.every_s seconds, never a control character.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace forge::train {

struct ProgressState {
  int64_t epoch = 0;   // 1-based
  int64_t epochs = 0;
  int64_t step = 0;    // optimizer steps done in this epoch
  int64_t steps = 0;   // optimizer steps per epoch
  double loss = 0;     // mean training loss of the epoch so far
  double samplesPerS = 0;
  double dataWaitShare = 0;  // fraction of the epoch's time so far spent waiting for data
  double elapsed = 0;        // seconds in this epoch, in this session
  // Steps done within `elapsed`; -1: all of `step`. After a mid-epoch resume it is fewer:
  // the pace (and the ETA) comes from this session's steps.
  int64_t timedSteps = -1;
};

// Seconds left in the epoch at the pace so far (0 before the first step).
double epochEta(const ProgressState& s);

// The terminal line: "epoch 3/10 |#########.........| 234/469  loss 0.3412  58,210 samples/s
// data 0.4%  ETA 0:01", fitted to `columns` (the bar shrinks first). `unicode`: block
// characters for the bar, else ASCII.
std::string progressBar(const ProgressState& s, int columns, bool unicode);
// The plain line for log files.
std::string progressLine(const ProgressState& s);
// "1:05" / "1:02:03".
std::string clockText(double seconds);

class Progress {
 public:
  enum class Mode { kBar, kLines, kOff };

  // log.progress: auto (bar when stdout is a terminal, else lines) | bar | lines | off.
  static Mode resolve(const std::string& setting, bool stdoutIsTerminal);
  // Whether stdout reaches a person: FORGE_TERMINAL when set, else isatty(stdout) outside
  // mpirun (whose ranks always get a pseudo-terminal) and TERM is not "dumb".
  static bool stdoutIsTerminal();

  Progress(Mode mode, double everySeconds);

  // Whether update() would draw now: callers skip assembling the state (which reads
  // device sums) when it would not.
  bool due() const;
  void update(const ProgressState& s);
  // Removes the bar before the epoch's summary line.
  void endEpoch();
  Mode mode() const { return mode_; }

 private:
  using Clock = std::chrono::steady_clock;
  Mode mode_;
  Clock::duration every_;
  Clock::time_point last_;
  bool unicode_;
};

}  // namespace forge::train
