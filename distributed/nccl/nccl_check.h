// Checking NCCL and CUDA runtime calls. A failure becomes a CommError that reads
//   [rank R] NCCL error in <call> at <file>:<line>: <ncclGetErrorString> (<ncclGetLastError>)
// so that a log from many ranks says at once which rank failed, where, and why.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <string>

namespace forge::dist::nccl {

// The message of a failed NCCL call; `comm` (may be null) supplies ncclGetLastError's detail.
std::string errorMessage(int rank, const char* call, const char* file, int line, ncclResult_t result,
                         ncclComm_t comm = nullptr);
[[noreturn]] void throwNcclError(int rank, const char* call, const char* file, int line, ncclResult_t result,
                                 ncclComm_t comm);
[[noreturn]] void throwCudaError(int rank, const char* call, const char* file, int line, cudaError_t result);

}  // namespace forge::dist::nccl

// ncclInProgress is not a failure: a non-blocking communicator is still working on the call.
#define FORGE_NCCL_CHECK(rank, comm, call)                                                             \
  do {                                                                                                 \
    ncclResult_t forge_nccl_result_ = (call);                                                          \
    if (forge_nccl_result_ != ncclSuccess && forge_nccl_result_ != ncclInProgress) {                  \
      ::forge::dist::nccl::throwNcclError((rank), #call, __FILE__, __LINE__, forge_nccl_result_, (comm)); \
    }                                                                                                  \
  } while (0)

#define FORGE_CUDA_CHECK(rank, call)                                                                   \
  do {                                                                                                 \
    cudaError_t forge_cuda_result_ = (call);                                                           \
    if (forge_cuda_result_ != cudaSuccess) {                                                           \
      ::forge::dist::nccl::throwCudaError((rank), #call, __FILE__, __LINE__, forge_cuda_result_);      \
    }                                                                                                  \
  } while (0)
