// Measurements for `forge doctor`: what the links between ranks deliver (a ping-pong between
// two ranks) and what an all-reduce of one gradient bucket costs, raw MPI beside forge's
// communicator.
#pragma once

#include <mpi.h>

#include <cstdint>

#include "distributed/communicator.h"

namespace forge::dist {

struct PairFigures {
  double latencyUs = 0;      // half the round trip of an 8-byte message
  double bandwidthGBs = 0;   // one-way, messages of `bytes`
};

// Collective over `comm`: every rank calls it with the same arguments; ranks `a` and `b`
// exchange messages (for about `seconds` in all), the others return at once. Blocks.
// Returns the figures on ranks a and b (zeros elsewhere).
PairFigures probePair(MPI_Comm comm, int a, int b, int64_t bytes, double seconds);

// Collective over `comm`: seconds per MPI_Allreduce (sum, float) of `bytes`, the median of
// runs made for about `seconds` after one warm-up. Blocks; the same on every rank.
double rawAllReduceSeconds(MPI_Comm comm, int64_t bytes, double seconds);

// Collective over `comm` (every rank, same order): seconds per forge all-reduce
// of a float tensor of `bytes` on `device`, the median measured like rawAllReduceSeconds.
double forgeAllReduceSeconds(Communicator& comm, int64_t bytes, c10::Device device, double seconds);

}  // namespace forge::dist
