#include "core/log.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <vector>

namespace forge::log {
namespace {

std::mutex g_mutex;
int g_rank = 0;
int g_size = 1;
// Whether this process is one rank of a job (setRank was called): only then do warnings
// and errors name the rank; `forge plot` or `forge ckpt inspect` have none.
bool g_ranked = false;

std::string rankPrefix() { return g_ranked ? "[rank " + std::to_string(g_rank) + "] " : std::string(); }
std::ofstream g_tee;
std::vector<std::string> g_early;  // rank 0's lines before teeTo
constexpr size_t kEarlyLines = 2000;
std::string g_status;
FILE* g_info = stdout;  // the status line being shown ("" = none)

// Caller holds g_mutex. The erase goes out on the stream of the line that follows it:
// under mpirun stdout and stderr travel apart, and only the same stream keeps the order.
std::string erase() { return g_status.empty() ? std::string() : std::string("\r\033[K"); }
void drawStatus() {
  if (g_status.empty()) return;
  std::fputs(("\r" + g_status + "\033[K").c_str(), stdout);
  std::fflush(stdout);
}
void keep(const std::string& text) {
  if (g_tee.is_open()) {
    g_tee << text << std::flush;
  } else if (g_rank == 0 && g_early.size() < kEarlyLines) {
    g_early.push_back(text);
  }
}

std::string prefix(const std::string& tag) {
  return tag.empty() ? std::string() : "[" + tag + "] ";
}

}  // namespace

void setRank(int rank, int size) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_rank = rank;
  g_ranked = true;
  g_size = size;
}

int rank() { return g_rank; }

void teeTo(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_rank != 0) return;
  g_tee.close();
  g_tee.open(path, std::ios::app);
  for (const auto& line : g_early) g_tee << line;
  g_tee << std::flush;
  g_early.clear();
}

void infoToStderr() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_info = stderr;
}

void setStatus(const std::string& line) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_rank != 0) return;
  g_status = line;
  drawStatus();
}

void clearStatus() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_status.empty()) return;
  std::fputs("\r\033[K", stdout);
  std::fflush(stdout);
  g_status.clear();
}

void infoLine(const std::string& tag, const std::string& line) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_rank != 0) return;
  std::string text = prefix(tag) + line + "\n";
  std::string shown = erase() + text;
  std::fwrite(shown.data(), 1, shown.size(), g_info);
  std::fflush(g_info);
  drawStatus();
  keep(text);
}

void warnLine(const std::string& tag, const std::string& line) {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::string text = rankPrefix() + prefix(tag) + "warning: " + line + "\n";
  std::string shown = erase() + text;
  std::fwrite(shown.data(), 1, shown.size(), stderr);
  std::fflush(stderr);
  drawStatus();
  keep(text);
}

void errorLine(const std::string& tag, const std::string& line) {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::string text = rankPrefix() + prefix(tag) + line + "\n";
  std::string shown = erase() + text;
  std::fwrite(shown.data(), 1, shown.size(), stderr);
  std::fflush(stderr);
  drawStatus();
  keep(text);
}

}  // namespace forge::log
