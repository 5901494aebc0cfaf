#include "distributed/link_probe.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "distributed/mpi/mpi_check.h"

namespace forge::dist {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Rank 0 decides how many repetitions fit in `seconds` from a first timing, so that every
// rank runs the same count (a collective loop must not end on one rank only).
int agreedRepetitions(MPI_Comm comm, double firstSeconds, double seconds, int most) {
  int reps = std::clamp(static_cast<int>(seconds / std::max(firstSeconds, 1e-6)), 1, most);
  FORGE_MPI_CHECK(MPI_Bcast(&reps, 1, MPI_INT, 0, comm));
  return reps;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

PairFigures probePair(MPI_Comm comm, int a, int b, int64_t bytes, double seconds) {
  int me = 0;
  FORGE_MPI_CHECK(MPI_Comm_rank(comm, &me));
  PairFigures f;
  if (me != a && me != b) return f;
  const int peer = me == a ? b : a;
  const bool leads = me == a;
  auto pingPong = [&](std::vector<char>& buf, int reps) {
    const int n = static_cast<int>(buf.size());
    for (int i = 0; i < reps; ++i) {
      if (leads) {
        FORGE_MPI_CHECK(MPI_Send(buf.data(), n, MPI_BYTE, peer, 7, comm));
        FORGE_MPI_CHECK(MPI_Recv(buf.data(), n, MPI_BYTE, peer, 7, comm, MPI_STATUS_IGNORE));
      } else {
        FORGE_MPI_CHECK(MPI_Recv(buf.data(), n, MPI_BYTE, peer, 7, comm, MPI_STATUS_IGNORE));
        FORGE_MPI_CHECK(MPI_Send(buf.data(), n, MPI_BYTE, peer, 7, comm));
      }
    }
  };
  // The pair agrees on repetition counts through the leader's first timing.
  auto reps = [&](double first, double budget, int most) {
    int r = std::clamp(static_cast<int>(budget / std::max(first, 1e-7)), 1, most);
    if (leads) {
      FORGE_MPI_CHECK(MPI_Send(&r, 1, MPI_INT, peer, 8, comm));
    } else {
      FORGE_MPI_CHECK(MPI_Recv(&r, 1, MPI_INT, peer, 8, comm, MPI_STATUS_IGNORE));
    }
    return r;
  };
  std::vector<char> small(8), large(static_cast<size_t>(bytes), 1);
  auto t = Clock::now();
  pingPong(small, 10);
  int n = reps(since(t) / 10, seconds / 4, 100000);
  t = Clock::now();
  pingPong(small, n);
  f.latencyUs = since(t) / n / 2 * 1e6;
  t = Clock::now();
  pingPong(large, 1);
  n = reps(since(t), seconds * 3 / 4, 1000);
  t = Clock::now();
  pingPong(large, n);
  f.bandwidthGBs = 2.0 * n * static_cast<double>(bytes) / since(t) / 1e9;
  return f;
}

double rawAllReduceSeconds(MPI_Comm comm, int64_t bytes, double seconds) {
  std::vector<float> buf(static_cast<size_t>(bytes / 4), 1.0f);
  const int n = static_cast<int>(buf.size());
  auto once = [&] {
    auto t = Clock::now();
    FORGE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf.data(), n, MPI_FLOAT, MPI_SUM, comm));
    return since(t);
  };
  const int reps = agreedRepetitions(comm, once(), seconds, 200);
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) times.push_back(once());
  return median(times);
}

double forgeAllReduceSeconds(Communicator& comm, int64_t bytes, c10::Device device, double seconds) {
  at::Tensor t = at::ones({bytes / 4}, at::TensorOptions().dtype(at::kFloat).device(device));
  auto once = [&] {
    auto start = Clock::now();
    comm.allReduce(t, ReduceOp::kSum);
    if (device.is_cuda()) t.cpu();  // the all-reduce is done when its result can be read
    return since(start);
  };
  // The count is agreed through a forge all-reduce of the first timing (max over ranks).
  at::Tensor first = at::full({1}, once(), at::TensorOptions().dtype(at::kDouble).device(device));
  comm.allReduce(first, ReduceOp::kMax);
  const int reps = std::clamp(static_cast<int>(seconds / std::max(first.cpu().item<double>(), 1e-6)), 1, 200);
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) times.push_back(once());
  return median(times);
}

}  // namespace forge::dist
