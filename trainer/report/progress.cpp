#include "trainer/report/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/log.h"
#include "core/names.h"
#include "core/strings.h"

namespace forge::train {
namespace {

// The terminal's width: its own report; else what launch/mpirun.sh measured (mpirun's
// pseudo-terminals report no size); else COLUMNS; else 80.
int terminalColumns() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) return ws.ws_col;
  for (const char* name : {env::kColumns, "COLUMNS"}) {
    const char* c = std::getenv(name);
    if (c != nullptr && std::atoi(c) > 20) return std::atoi(c);
  }
  return 80;
}

bool utf8Locale() {
  for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return std::strstr(v, "UTF-8") != nullptr || std::strstr(v, "utf8") != nullptr;
  }
  return false;
}

}  // namespace

double epochEta(const ProgressState& s) {
  const int64_t timed = s.timedSteps >= 0 ? s.timedSteps : s.step;
  if (timed <= 0 || s.steps <= s.step) return 0;
  return s.elapsed / static_cast<double>(timed) * static_cast<double>(s.steps - s.step);
}

std::string clockText(double seconds) {
  long long t = std::llround(std::max(0.0, seconds));
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", t / 60, t % 60);
  }
  return buf;
}

std::string progressBar(const ProgressState& s, int columns, bool unicode) {
  const std::string head = concat("epoch ", s.epoch, "/", s.epochs, " ");
  const std::string tail = concat(" ", s.step, "/", s.steps, "  loss ", fixed(s.loss, 4), "  ",
                                  withThousands(std::llround(s.samplesPerS)), " samples/s  data ",
                                  fixed(100.0 * s.dataWaitShare, 1), "%  ETA ", clockText(epochEta(s)));
  // The bar takes what is left of the line, between 10 and 40 cells; a terminal too narrow
  // for that gets the text without the bar.
  const int room = columns - 1 - static_cast<int>(head.size() + tail.size()) - 2;
  if (room < 10) {
    // No room for a bar: the text, cut to the width (a wrapped line cannot be redrawn).
    std::string text = head + tail.substr(1);
    if (static_cast<int>(text.size()) >= columns) text.resize(std::max(0, columns - 1));
    return text;
  }
  const int cells = std::min(40, room);
  const double frac = s.steps > 0 ? std::clamp(static_cast<double>(s.step) / s.steps, 0.0, 1.0) : 0.0;
  std::string bar = "|";
  if (unicode) {
    // Eighths of a cell, as tqdm draws them.
    static const char* kEighths[] = {"", "\u258F", "\u258E", "\u258D", "\u258C", "\u258B", "\u258A", "\u2589"};
    const int eighths = static_cast<int>(frac * cells * 8);
    int drawn = 0;
    for (; drawn < eighths / 8; ++drawn) bar += "\u2588";
    if (drawn < cells && eighths % 8) {
      bar += kEighths[eighths % 8];
      ++drawn;
    }
    bar += std::string(cells - drawn, ' ');
  } else {
    const int full = static_cast<int>(frac * cells);
    bar += std::string(full, '#') + std::string(cells - full, '.');
  }
  return head + bar + "|" + tail;
}

std::string progressLine(const ProgressState& s) {
  return concat("epoch ", s.epoch, "/", s.epochs, " step ", s.step, "/", s.steps, " (",
                fixed(s.steps > 0 ? 100.0 * s.step / s.steps : 0.0, 0), "%)  loss ", fixed(s.loss, 4), "  ",
                withThousands(std::llround(s.samplesPerS)), " samples/s  data wait ",
                fixed(100.0 * s.dataWaitShare, 1), "%  epoch ETA ", clockText(epochEta(s)));
}

Progress::Mode Progress::resolve(const std::string& setting, bool stdoutIsTerminal) {
  if (setting == "bar") return Mode::kBar;
  if (setting == "lines") return Mode::kLines;
  if (setting == "off") return Mode::kOff;
  return stdoutIsTerminal ? Mode::kBar : Mode::kLines;
}

bool Progress::stdoutIsTerminal() {
  if (const char* v = std::getenv(env::kTerminal); v != nullptr && *v != '\0') return std::strcmp(v, "0") != 0;
  if (std::getenv(env::kOmpiSize) != nullptr) return false;
  const char* term = std::getenv("TERM");
  if (term != nullptr && std::strcmp(term, "dumb") == 0) return false;
  return isatty(STDOUT_FILENO) != 0;
}

Progress::Progress(Mode mode, double everySeconds)
    : mode_(mode),
      every_(mode == Mode::kBar ? std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(200))
                                : std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(everySeconds))),
      // The bar shows from an epoch's first step; plain lines wait their interval.
      last_(mode == Mode::kBar ? Clock::time_point{} : Clock::now()),
      unicode_(utf8Locale()) {}

bool Progress::due() const { return mode_ != Mode::kOff && Clock::now() - last_ >= every_; }

void Progress::update(const ProgressState& s) {
  last_ = Clock::now();
  if (mode_ == Mode::kBar) {
    log::setStatus(progressBar(s, terminalColumns(), unicode_));
  } else if (mode_ == Mode::kLines) {
    log::info("train", progressLine(s));
  }
}

void Progress::endEpoch() {
  if (mode_ == Mode::kBar) log::clearStatus();
  last_ = mode_ == Mode::kBar ? Clock::time_point{} : Clock::now();
}

}  // namespace forge::train
