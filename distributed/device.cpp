#include "distributed/device.h"

#include <unistd.h>

#include <cstdlib>
#include <set>

#include "distributed/communicator.h"

#include "core/error.h"
#include "core/names.h"
#include "core/strings.h"

#ifdef FORGE_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

namespace forge::dist {

bool builtWithCuda() {
#ifdef FORGE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

bool builtWithNccl() {
#ifdef FORGE_WITH_NCCL
  return true;
#else
  return false;
#endif
}

int visibleCudaDevices() {
#ifdef FORGE_WITH_CUDA
  // cudaGetDeviceCount fails (no driver, no device) rather than throwing; either means none.
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later CUDA calls start clean
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

bool gpuSharingAllowed() {
  const char* v = std::getenv(env::kShareGpus);
  if (v == nullptr || *v == '\0' || std::string(v) == "0") return false;
  if (std::string(v) == "1") return true;
  throw ConfigError(concat(env::kShareGpus, " must be 0 or 1, got '", v, "'"));
}

int cudaDeviceFor(int localRank, int localSize, int visible, bool shareGpus) {
  if (visible <= 0) {
    throw ConfigError(builtWithCuda() ? "run.device is cuda, but no CUDA GPU is visible to this process (is the "
                                        "driver loaded? is CUDA_VISIBLE_DEVICES empty?); use run.device: cpu"
                                      : "run.device is cuda, but this forge was built without CUDA (configure it "
                                        "against a CUDA build of LibTorch); use run.device: cpu");
  }
  if (localSize > visible && !shareGpus) {
    throw ConfigError(concat("this node runs ", localSize, " ranks but has ", visible, " visible GPU",
                             visible == 1 ? "" : "s", ": start at most ", visible, " rank",
                             visible == 1 ? "" : "s", " per node (one per GPU), or use run.device: cpu (",
                             env::kShareGpus, "=1 lets ranks share GPUs, for tests)"));
  }
  return localRank % visible;
}

DeviceChoice selectDevice(const std::string& wanted, const WorldInfo& world, bool boundPerRank) {
  DeviceChoice c;
  if (wanted == "cpu") return c;
  int visible = visibleCudaDevices();
  const bool share = gpuSharingAllowed();
  if (boundPerRank && visible > 0 && (wanted == "auto" || wanted == "cuda")) {
    // Each rank sees only its own GPUs: the first of them is this rank's.
#ifdef FORGE_WITH_CUDA
    c10::cuda::set_device(0);
#endif
    c.device = c10::Device(c10::kCUDA, 0);
    return c;
  }
  if (wanted == "auto") {
    if (visible == 0) {
      c.why = builtWithCuda() ? "no GPU visible" : "built without CUDA";
      return c;
    }
    if (world.localSize > visible && !share) {
      c.why = concat(world.localSize, " ranks on the node, ", visible, " GPU", visible == 1 ? "" : "s");
      return c;
    }
  } else if (wanted != "cuda") {
    throw ConfigError(concat("run.device must be auto, cpu or cuda, got '", wanted, "'"));
  }
  int index = cudaDeviceFor(world.localRank, world.localSize, visible, share);
#ifdef FORGE_WITH_CUDA
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
#endif
  c.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  return c;
}

bool gpusBoundPerRank(Communicator& comm) {
  auto hash = [](const std::string& text) {
    uint64_t h = 1469598103934665603ULL;
    for (unsigned char ch : text) h = (h ^ ch) * 1099511628211ULL;
    return static_cast<int64_t>(h & 0x7fffffffffffffffULL);
  };
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES");
  at::Tensor mine = at::tensor({hash(host), cvd != nullptr && *cvd != '\0' ? hash(cvd) : int64_t{-1}}, at::kLong);
  at::Tensor all = at::empty({2 * comm.size()}, at::kLong);
  comm.allGather(mine, all);
  const int64_t* v = all.data_ptr<int64_t>();
  std::set<int64_t> seen;
  for (int r = 0; r < comm.size(); ++r) {
    if (v[2 * r] != v[0 + 2 * comm.rank()]) continue;  // another node
    if (v[2 * r + 1] < 0 || !seen.insert(v[2 * r + 1]).second) return false;
  }
  return true;
}

std::string describeDevice(const c10::Device& device) {
  if (!device.is_cuda()) return "cpu";
#ifdef FORGE_WITH_CUDA
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device.index()) == cudaSuccess) {
    return concat("cuda:", static_cast<int>(device.index()), " (", prop.name, ")");
  }
#endif
  return concat("cuda:", static_cast<int>(device.index()));
}

}  // namespace forge::dist
