#include "distributed/agreement.h"

#include <unistd.h>

#include <cstring>
#include <map>

#include "core/error.h"
#include "core/strings.h"

namespace forge::dist {
namespace {

constexpr int64_t kField = 96;  // bytes per fact, and for the host name

void put(char* at, const std::string& text) { std::memcpy(at, text.data(), std::min<size_t>(text.size(), kField - 1)); }

std::string get(const char* at) { return std::string(at, strnlen(at, kField)); }

}  // namespace

void checkRanksAgree(Communicator& comm, const std::vector<Fact>& facts) {
  const int64_t width = kField * static_cast<int64_t>(facts.size() + 1);
  at::Tensor mine = at::zeros({width}, at::kByte);
  char* out = static_cast<char*>(mine.data_ptr());
  char host[kField] = {0};
  gethostname(host, sizeof host - 1);
  put(out, host);
  for (size_t f = 0; f < facts.size(); ++f) put(out + kField * static_cast<int64_t>(f + 1), facts[f].value);
  at::Tensor all = at::zeros({width * comm.size()}, at::kByte);
  comm.allGather(mine, all);
  const char* base = static_cast<const char*>(all.data_ptr());
  std::string problems;
  for (size_t f = 0; f < facts.size(); ++f) {
    std::map<std::string, std::string> holders;  // value -> "rank 0 (host a), rank 2 (host b)"
    for (int r = 0; r < comm.size(); ++r) {
      const char* row = base + width * r;
      std::string& who = holders[get(row + kField * static_cast<int64_t>(f + 1))];
      who += concat(who.empty() ? "" : ", ", "rank ", r, " (", get(row), ")");
    }
    if (holders.size() < 2) continue;
    problems += concat(problems.empty() ? "" : "; ", "the ranks disagree on ", facts[f].name, ":");
    for (const auto& [value, who] : holders) problems += concat(" ", who, " has ", value.empty() ? "(none)" : value, ";");
    problems.pop_back();
  }
  if (!problems.empty()) {
    throw ConfigError(concat(problems, ". Every node must run the same forge build with the same LibTorch and read the "
                                       "same config (a shared install and config path, or identical copies)"));
  }
}

}  // namespace forge::dist
