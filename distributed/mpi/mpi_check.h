// FORGE_MPI_CHECK(call): turns an MPI error code into a CommError naming the call, the
// source location and MPI's own description.
#pragma once

#include <mpi.h>

#include <string>

#include "core/error.h"

namespace forge::dist::detail {
std::string mpiErrorString(int code);
}

#define FORGE_MPI_CHECK(call)                                                              \
  do {                                                                                     \
    int forge_mpi_rc_ = (call);                                                            \
    if (forge_mpi_rc_ != MPI_SUCCESS) {                                                    \
      throw ::forge::CommError(::forge::concat("MPI error in ", #call, " at ", __FILE__, ":", \
                                            __LINE__, ": ",                                \
                                            ::forge::dist::detail::mpiErrorString(forge_mpi_rc_))); \
    }                                                                                      \
  } while (0)
