// Where a rank computes: the CPU, or one GPU per rank. With CUDA, each rank binds to GPU
// local_rank % visible_devices before any other CUDA work, so that every allocation, stream
// and NCCL communicator of the process lives on that one device.
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "distributed/world.h"

namespace forge::dist {

// CUDA devices this process can see (CUDA_VISIBLE_DEVICES applies); 0 when forge was built
// without CUDA or no driver/GPU is present. Creates no CUDA context.
int visibleCudaDevices();

// True when this forge was built with the CUDA path (FORGE_WITH_CUDA).
bool builtWithCuda();
// True when this forge was built with the NCCL backend (FORGE_WITH_NCCL).
bool builtWithNccl();

// The GPU index a rank takes. ConfigError when the node runs more ranks than it has GPUs
// (two ranks sharing a GPU would double its memory and serialize its kernels), unless
// `shareGpus` (FORGE_SHARE_GPUS=1): then ranks share them, local rank % visible.
int cudaDeviceFor(int localRank, int localSize, int visible, bool shareGpus = false);

// True when FORGE_SHARE_GPUS is 1 (core/names.h): the node's ranks may share its GPUs.
// Any other value than unset, 0 or 1 is a ConfigError.
bool gpuSharingAllowed();

// Resolves run.device ("auto", "cpu" or "cuda") for this rank and, for CUDA, makes the GPU
// current. "auto" takes the GPUs when every rank on the node can have one of its own, else
// the CPU (and `why` says why); with FORGE_SHARE_GPUS=1, "auto" and "cuda" take a GPU
// whatever the rank count. Call before any other CUDA work.
struct DeviceChoice {
  c10::Device device{c10::kCPU};
  std::string why;  // for "auto": why the CPU was chosen ("" otherwise)
};
// `boundPerRank`: the launcher gave each rank its own GPUs (distinct CUDA_VISIBLE_DEVICES
// per rank on the node, as Slurm's --gpus-per-task does): each rank takes its first visible
// GPU, whatever the count of ranks on the node.
DeviceChoice selectDevice(const std::string& wanted, const WorldInfo& world, bool boundPerRank = false);

// Collective over `comm`: true when every rank on this node has CUDA_VISIBLE_DEVICES set and
// no two of them have the same value (see boundPerRank above).
class Communicator;
bool gpusBoundPerRank(Communicator& comm);

// "cpu", or "cuda:<i> (<GPU name>)".
std::string describeDevice(const c10::Device& device);

}  // namespace forge::dist
