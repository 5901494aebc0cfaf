#include "distributed/replicas.h"

#include <torch/torch.h>

#include <iomanip>

#include "core/error.h"

namespace forge::dist {
namespace {
void fnv1a(uint64_t& h, const void* data, size_t n) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= bytes[i];
    h *= 1099511628211ULL;
  }
}
}  // namespace

uint64_t stateFingerprint(const torch::nn::Module& module) {
  uint64_t h = 1469598103934665603ULL;
  auto add = [&](const at::Tensor& t) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    fnv1a(h, c.data_ptr(), c.numel() * c.element_size());
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
