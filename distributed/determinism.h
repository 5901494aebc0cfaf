// run.deterministic: what bit-exact training and resumption need of the GPU libraries, set
// once per process before any CUDA, cuBLAS or NCCL work (the ProcessGroup does it first).
//   - CUBLAS_WORKSPACE_CONFIG=:4096:8 (unless set): cuBLAS then reduces in a fixed order;
//     it is read when the first cuBLAS handle is made, so later is too late
//   - ATen's deterministic algorithms on, warn-only: an op that has no deterministic kernel
//     warns once naming itself (the run goes on, and a bit-exact check then tells)
//   - cuDNN: deterministic algorithms, no benchmarking (which may pick others each run)
//   - NCCL_ALGO=Ring and NCCL_PROTO=Simple (each unless set): NCCL otherwise chooses by
//     topology and message size, so a requeue onto other nodes could reduce in another order
// On CPUs forge's runs are reproducible already; the settings are harmless there.
#pragma once

#include <string>
#include <vector>

namespace forge::dist {

// The values pinned (the variables' names: core/names.h).
inline constexpr const char* kCublasWorkspaceValue = ":4096:8";
inline constexpr const char* kNcclAlgoValue = "Ring";
inline constexpr const char* kNcclProtoValue = "Simple";

// Applies the settings above when `on` (else changes nothing). Local, non-blocking; call on
// every rank before the first CUDA work. Returns what is in force, as "NAME=value" and
// setting names, for the log; a variable the user had set already is kept, and marked so.
std::vector<std::string> applyDeterminism(bool on);

}  // namespace forge::dist
