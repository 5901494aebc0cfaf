// Shared main for forge's GoogleTest executables: MPI up for the whole run (a world of one
// rank when started without mpirun), HDF5's own error printing off.
#include <gtest/gtest.h>

#include "data/hdf5_file.h"
#include "distributed/mpi_runtime.h"

int main(int argc, char** argv) {
  forge::dist::MpiRuntime mpi(&argc, &argv);
  forge::data::silenceHdf5Errors();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
