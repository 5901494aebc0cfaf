// The one logging path: every line carries a tag and, where it matters, the rank.
//   info()  progress and summaries, printed by rank 0 only, to stdout;
//   warn()  from any rank, to stderr, prefixed "[rank R]" (once setRank has named the rank);
//   error() from any rank, to stderr, prefixed "[rank R]" (likewise).
// Thread-safe: a line is written whole.
#pragma once

#include <string>

#include "core/error.h"

namespace forge::log {

// Sets who this process is; before it is called, the process counts as rank 0 of 1.
void setRank(int rank, int size);
int rank();

// Sends info() lines to stderr instead of stdout: for commands whose stdout is data
// (`forge eval --json`).
void infoToStderr();

// Adds a file (e.g. RUN_DIR/forge.log) that receives a copy of what rank 0 prints, from
// the start: lines printed before the call (up to a bound) are written to it first.
void teeTo(const std::string& path);

// Rank 0, on a terminal: a live status line (a progress bar) below the log. It is redrawn in
// place ("\r", erase to end of line); a log line printed meanwhile clears it, prints, and
// draws it again. Never written to the tee file. clearStatus() removes it for good.
void setStatus(const std::string& line);
void clearStatus();

void infoLine(const std::string& tag, const std::string& line);
void warnLine(const std::string& tag, const std::string& line);
void errorLine(const std::string& tag, const std::string& line);

template <typename... Args>
void info(const std::string& tag, const Args&... args) {
  infoLine(tag, concat(args...));
}
template <typename... Args>
void warn(const std::string& tag, const Args&... args) {
  warnLine(tag, concat(args...));
}
template <typename... Args>
void error(const std::string& tag, const Args&... args) {
  errorLine(tag, concat(args...));
}

}  // namespace forge::log
