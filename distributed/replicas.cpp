#include "distributed/replicas.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <iomanip>

#include "core/error.h"
#include "core/hash.h"
#include "distributed/rank_status.h"

namespace forge::dist {
namespace {
// 8 bytes at a time: (h ^ w) * odd is a bijection of h for each w, so a change in any one
// word always changes the result.
uint64_t wordHash(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).contiguous();
  const auto* bytes = static_cast<const unsigned char*>(c.data_ptr());
  const size_t n = static_cast<size_t>(c.numel()) * c.element_size();
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes + i, 8);
    h = (h ^ w) * 0x100000001B3ULL;
  }
  for (; i < n; ++i) h = (h ^ bytes[i]) * 0x100000001B3ULL;
  return h;
}

}  // namespace

uint64_t stateFingerprint(const torch::nn::Module& module) {
  uint64_t h = kFnvOffset;
  auto add = [&](const at::Tensor& t) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    h = fnv1a(c.data_ptr(), c.numel() * c.element_size(), h);
  };
  for (const auto& p : module.parameters()) add(p);
  for (const auto& b : module.buffers()) add(b);
  return h;
}

uint64_t verifyReplicas(const torch::nn::Module& module, Communicator& comm) {
  uint64_t mine = stateFingerprint(module);
  at::Tensor in = at::empty({1}, at::kLong);
  in[0] = static_cast<int64_t>(mine);
  at::Tensor all = at::empty({comm.size()}, at::kLong);
  comm.allGather(in, all);
  std::vector<int> differ;
  auto* v = all.data_ptr<int64_t>();
  for (int r = 1; r < comm.size(); ++r) {
    if (v[r] != v[0]) differ.push_back(r);
  }
  if (!differ.empty()) {
    std::ostringstream ranks;
    for (size_t i = 0; i < differ.size(); ++i) ranks << (i ? ", " : "") << differ[i];
    throw CommError(concat("replicas diverged: the parameters/buffers of rank(s) ", ranks.str(),
                        " differ from rank 0's"));
  }
  return mine;
}

}  // namespace forge::dist

namespace forge::dist {

void checkReplicasAgree(const torch::nn::Module& module, Communicator& comm, bool withBuffers, const std::string& when) {
  PhaseScope phase(Phase::kVerify);
  std::vector<std::string> names;
  std::vector<int64_t> hashes;
  for (const auto& p : module.named_parameters()) {
    names.push_back(p.key());
    hashes.push_back(static_cast<int64_t>(wordHash(p.value())));
  }
  if (withBuffers) {
    for (const auto& b : module.named_buffers()) {
      names.push_back(b.key());
      hashes.push_back(static_cast<int64_t>(wordHash(b.value())));
    }
  }
  uint64_t combined = 1469598103934665603ULL;
  for (int64_t h : hashes) combined = (combined ^ static_cast<uint64_t>(h)) * 0x100000001B3ULL;
  at::Tensor in = at::full({1}, static_cast<int64_t>(combined), at::kLong);
  at::Tensor all = at::empty({comm.size()}, at::kLong);
  comm.allGather(in, all);
  const auto* v = all.data_ptr<int64_t>();
  bool agree = true;
  for (int r = 1; r < comm.size(); ++r) agree = agree && v[r] == v[0];
  if (agree) return;
  // Every rank saw the same gathered values, so every rank takes this second round.
  const int64_t n = static_cast<int64_t>(hashes.size());
  at::Tensor mine = at::tensor(hashes, at::kLong);
  at::Tensor each = at::empty({n * comm.size()}, at::kLong);
  comm.allGather(mine, each);
  const auto* e = each.data_ptr<int64_t>();
  // The odd ones out are the ranks outside the largest group of agreeing ranks (rank 0's
  // group on a tie): with 3 ranks of which rank 0 drifted, ranks 1 and 2 are not to blame.
  std::map<int64_t, std::vector<int>> groups;
  for (int r = 0; r < comm.size(); ++r) groups[v[r]].push_back(r);
  const std::vector<int>* majority = &groups[v[0]];
  for (const auto& [h, ranks] : groups) {
    if (ranks.size() > majority->size()) majority = &ranks;
  }
  const bool tie = std::count_if(groups.begin(), groups.end(), [&](const auto& g) {
                     return g.second.size() == majority->size();
                   }) > 1;
  const int reference = majority->front();
  std::string detail;
  int differing = 0;
  for (int r = 0; r < comm.size(); ++r) {
    if (v[r] == v[reference]) continue;
    ++differing;
    std::string first = "(no single tensor: they differ in the combination)";
    for (int64_t i = 0; i < n; ++i) {
      if (e[r * n + i] != e[reference * n + i]) {
        first = names[i];
        break;
      }
    }
    if (differing <= 8) detail += concat(detail.empty() ? "" : "; ", "rank ", r, " first in ", first);
  }
  if (differing > 8) detail += concat("; and ", differing - 8, " more rank(s)");
  throw CommError(concat(
      "replicas differ ", when, ": ", differing, " rank(s) differ from rank ", reference,
      tie ? concat(" (no majority among the ", comm.size(), " ranks: which side drifted cannot be told)")
          : concat(" and the ", majority->size(), " rank(s) that agree with it"),
      " (", detail,
      "); the replicas were identical at the last check, so something changed parameters outside the "
      "synchronized step (a non-deterministic kernel, memory corruption, a bug in a custom step)"));
}

}  // namespace forge::dist
