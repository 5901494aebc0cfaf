#include "distributed/agreement.h"

#include <link.h>
#include <mpi.h>
#include <torch/version.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/names.h"
#include "core/strings.h"

namespace forge::dist {
namespace {

constexpr int64_t kField = 96;  // bytes per fact, and for the host name

void put(char* at, const std::string& text) { std::memcpy(at, text.data(), std::min<size_t>(text.size(), kField - 1)); }

std::string get(const char* at) { return std::string(at, strnlen(at, kField)); }

// Every rank's `detail` texts, gathered (collective: every rank calls it when any fact
// differs, which every rank knows at once).
std::vector<std::string> gatherDetail(Communicator& comm, const std::string& mine) {
  at::Tensor size = at::full({1}, static_cast<int64_t>(mine.size()), at::kLong);
  at::Tensor sizes = at::empty({comm.size()}, at::kLong);
  comm.allGather(size, sizes);
  const int64_t width = std::max<int64_t>(1, sizes.max().item<int64_t>());
  at::Tensor in = at::zeros({width}, at::kByte);
  std::memcpy(in.data_ptr(), mine.data(), mine.size());
  at::Tensor all = at::empty({width * comm.size()}, at::kByte);
  comm.allGather(in, all);
  std::vector<std::string> out;
  for (int r = 0; r < comm.size(); ++r) {
    out.emplace_back(static_cast<const char*>(all.data_ptr()) + width * r, sizes[r].item<int64_t>());
  }
  return out;
}

std::string printable(const std::string& line) {
  std::string s;
  for (unsigned char c : line.substr(0, 80)) s += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  return s;
}

// "line N: rank 0 has `...`, rank R has `...`" for the first line where b differs from a.
std::string firstDifference(const std::string& a, const std::string& b, int rank) {
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  for (int line = 1;; ++line) {
    const bool ga = static_cast<bool>(std::getline(sa, la)), gb = static_cast<bool>(std::getline(sb, lb));
    if (!ga && !gb) return "";
    if (!ga) la = "(end)";
    if (!gb) lb = "(end)";
    if (la != lb || !ga || !gb) {
      return concat("line ", line, ": rank 0 has `", printable(la), "`, rank ", rank, " has `", printable(lb), "`");
    }
  }
}

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
    std::vector<std::string> values;
    for (int r = 0; r < comm.size(); ++r) {
      const char* row = base + width * r;
      values.push_back(get(row + kField * static_cast<int64_t>(f + 1)));
      std::string& who = holders[values.back()];
      who += concat(who.empty() ? "" : ", ", "rank ", r, " (", get(row), ")");
    }
    if (holders.size() < 2) continue;
    problems += concat(problems.empty() ? "" : "; ", "the ranks disagree on ", facts[f].name, ":");
    for (const auto& [value, who] : holders) problems += concat(" ", who, " has ", value.empty() ? "(none)" : value, ";");
    problems.pop_back();
    if (!facts[f].detail.empty()) {
      std::vector<std::string> texts = gatherDetail(comm, facts[f].detail);
      for (int r = 1; r < comm.size(); ++r) {
        if (values[r] == values[0]) continue;
        problems += concat(" (first difference, ", firstDifference(texts[0], texts[r], r), ")");
        break;
      }
    }
  }
  if (!problems.empty()) {
    throw ConfigError(concat(problems, ". Every node must run the same forge build with the same LibTorch and MPI, the "
                                       "same command, and read the same config (a shared install and config path, or "
                                       "identical copies)"));
  }
}

std::string executableBuildId() {
  std::string id;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        // The first object is the executable itself.
        auto* out = static_cast<std::string*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_NOTE) continue;
          const char* p = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
          const char* end = p + ph.p_memsz;
          while (p + sizeof(ElfW(Nhdr)) <= end) {
            const auto* n = reinterpret_cast<const ElfW(Nhdr)*>(p);
            const char* name = p + sizeof(ElfW(Nhdr));
            const char* desc = name + ((n->n_namesz + 3) & ~3u);
            if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
              static const char* hex = "0123456789abcdef";
              for (unsigned k = 0; k < n->n_descsz; ++k) {
                const unsigned char b = static_cast<unsigned char>(desc[k]);
                *out += hex[b >> 4];
                *out += hex[b & 15];
              }
              return 1;
            }
            p = desc + ((n->n_descsz + 3) & ~3u);
          }
        }
        return 1;  // only the executable
      },
      &id);
  return id;
}

std::vector<Fact> buildFacts(const std::string& command) {
  std::string version = FORGE_VERSION;
  if (const char* fake = std::getenv(env::kFaultVersion)) version = fake;  // test-only
  const std::string id = executableBuildId();
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  MPI_Get_library_version(mpi, &len);
  std::string mpiText(mpi, static_cast<size_t>(len));
  mpiText = mpiText.substr(0, mpiText.find_first_of(",\n"));
  return {
      {"forge's version", version, ""},
      {"forge's build (the executable's build id)", id.empty() ? "(none)" : id.substr(0, 16), ""},
      {"LibTorch's version", concat(TORCH_VERSION_MAJOR, ".", TORCH_VERSION_MINOR, ".", TORCH_VERSION_PATCH), ""},
      {"the MPI library", mpiText, ""},
      {"the command", command, ""},
  };
}

}  // namespace forge::dist
