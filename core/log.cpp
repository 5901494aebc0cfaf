#include "core/log.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>

namespace forge::log {
namespace {

std::mutex g_mutex;
int g_rank = 0;
int g_size = 1;
std::ofstream g_tee;

std::string prefix(const std::string& tag) {
  return tag.empty() ? std::string() : "[" + tag + "] ";
}

}  // namespace

void setRank(int rank, int size) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_rank = rank;
  g_size = size;
}

int rank() { return g_rank; }

void teeTo(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_rank != 0) return;
  g_tee.close();
  g_tee.open(path, std::ios::app);
}

void infoLine(const std::string& tag, const std::string& line) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_rank != 0) return;
  std::string text = prefix(tag) + line + "\n";
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
  if (g_tee.is_open()) g_tee << text << std::flush;
}

void warnLine(const std::string& tag, const std::string& line) {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::string text = "[rank " + std::to_string(g_rank) + "] " + prefix(tag) + "warning: " + line + "\n";
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
  if (g_tee.is_open()) g_tee << text << std::flush;
}

void errorLine(const std::string& tag, const std::string& line) {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::string text = "[rank " + std::to_string(g_rank) + "] " + prefix(tag) + line + "\n";
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
  if (g_tee.is_open()) g_tee << text << std::flush;
}

}  // namespace forge::log
