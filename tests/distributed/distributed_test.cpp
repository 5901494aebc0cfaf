// Runs under `mpirun -np N` (N = 1, 2, 3): every expectation is a closed-form function of
// the rank and the world size.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include <thread>

#include "core/error.h"
#include "distributed/gradient_synchronizer.h"
#include "distributed/mpi/mpi_communicator.h"
#include "distributed/replicas.h"
#include "distributed/world.h"

namespace forge::dist {
namespace {

class Dist : public ::testing::Test {
 protected:
  Dist() : comm(MPI_COMM_WORLD, std::chrono::seconds(60)) {}
  MpiCommunicator comm;
  int r() const { return comm.rank(); }
  int w() const { return comm.size(); }
};

TEST_F(Dist, WorldDiscoveryAgreesWithMpi) {
  WorldInfo info = discoverWorld();
  EXPECT_EQ(info.rank, r());
  EXPECT_EQ(info.size, w());
  EXPECT_EQ(info.nodes, 1);  // the test runs on one machine
  EXPECT_EQ(info.localSize, w());
  EXPECT_EQ(info.localRank, r());
}

TEST_F(Dist, AllReduceMatchesClosedForms) {
  at::Tensor t = at::full({1000}, r() + 1.0, at::kFloat);
  comm.allReduce(t, ReduceOp::kSum);
  EXPECT_TRUE(at::all(t == w() * (w() + 1) / 2.0).item<bool>());
  at::Tensor a = at::full({7}, r() + 1.0, at::kDouble);
  comm.allReduce(a, ReduceOp::kAvg);
  EXPECT_TRUE(at::allclose(a, at::full({7}, (w() + 1) / 2.0, at::kDouble)));
  at::Tensor m = at::full({3}, static_cast<int64_t>(r()), at::kLong);
  comm.allReduce(m, ReduceOp::kMax);
  EXPECT_EQ(m[0].item<int64_t>(), w() - 1);
  EXPECT_EQ(comm.anyRank(r() == w() - 1), true);
  EXPECT_EQ(comm.anyRank(false), false);
}

TEST_F(Dist, BroadcastAndAllGather) {
  at::Tensor b = r() == 0 ? at::arange(5, at::kFloat) : at::zeros({5}, at::kFloat);
  comm.broadcast(b, 0);
  EXPECT_TRUE(at::equal(b, at::arange(5, at::kFloat)));
  at::Tensor in = at::full({2}, static_cast<int64_t>(10 * r()), at::kLong);
  at::Tensor out = at::empty({2 * w()}, at::kLong);
  comm.allGather(in, out);
  for (int k = 0; k < w(); ++k) {
    EXPECT_EQ(out[2 * k].item<int64_t>(), 10 * k);
    EXPECT_EQ(out[2 * k + 1].item<int64_t>(), 10 * k);
  }
}

// Rank q's local batch: x[i][j] = (q + 1) * (i + 1) + j, B rows of D features.
constexpr int64_t kB = 4, kD = 3, kClasses = 2;
at::Tensor batchOf(int q) {
  at::Tensor x = at::empty({kB, kD}, at::kFloat);
  for (int64_t i = 0; i < kB; ++i)
    for (int64_t j = 0; j < kD; ++j) x[i][j] = static_cast<float>((q + 1) * (i + 1) + j) / 10.0f;
  return x;
}
at::Tensor labelsOf(int q) { return at::arange(kB, at::kLong).add(q).remainder(kClasses); }

TEST_F(Dist, AveragedGradientEqualsTheClosedFormMeanOverTheGlobalBatch) {
  // L = mean_i (w . x_i)  =>  dL/dw_j = mean_i x_ij. Averaged over ranks with equal local
  // batches, that is the global mean: ((W + 1) / 2 * (B + 1) / 2 + j) / 10.
  auto lin = std::make_shared<torch::nn::LinearImpl>(torch::nn::LinearOptions(kD, 1).bias(false));
  GradientSynchronizer sync(lin, comm);
  sync.broadcastState();
  lin->forward(batchOf(r())).mean().backward();
  sync.averageGradients();
  at::Tensor g = lin->weight.grad();
  for (int64_t j = 0; j < kD; ++j) {
    double expected = ((w() + 1) / 2.0 * (kB + 1) / 2.0 + j) / 10.0;
    EXPECT_NEAR(g[0][j].item<double>(), expected, 1e-6 * expected);
  }
}

TEST_F(Dist, AveragedGradientEqualsSingleProcessGradientOfTheConcatenatedBatch) {
  torch::manual_seed(100 + r());  // different on purpose: broadcastState must fix it
  auto model = std::make_shared<torch::nn::SequentialImpl>(torch::nn::Linear(kD, 5), torch::nn::Functional(torch::tanh),
                                                           torch::nn::Linear(5, kClasses));
  GradientSynchronizer sync(model, comm);
  sync.broadcastState();
  // The reference: one process, the global batch, the same (rank 0's) weights.
  auto reference = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(model->clone());
  std::vector<at::Tensor> xs, ys;
  for (int q = 0; q < w(); ++q) {
    xs.push_back(batchOf(q));
    ys.push_back(labelsOf(q));
  }
  torch::nn::functional::cross_entropy(reference->forward(at::cat(xs)), at::cat(ys)).backward();

  torch::nn::functional::cross_entropy(model->forward(batchOf(r())), labelsOf(r())).backward();
  sync.averageGradients();
  auto mine = model->parameters();
  auto ref = reference->parameters();
  ASSERT_EQ(mine.size(), ref.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    EXPECT_TRUE(at::allclose(mine[i].grad(), ref[i].grad(), 1e-5, 1e-7)) << "parameter " << i;
  }
}

TEST_F(Dist, ReplicaCheckProvesIdentityAndCatchesDivergence) {
  torch::manual_seed(7 + r());
  auto lin = std::make_shared<torch::nn::LinearImpl>(6, 4);
  if (w() > 1) {
    EXPECT_THROW(verifyReplicas(*lin, comm), CommError);
  }
  GradientSynchronizer sync(lin, comm);
  sync.broadcastState();
  uint64_t fp = verifyReplicas(*lin, comm);
  EXPECT_EQ(fp, stateFingerprint(*lin));
}

TEST_F(Dist, AStuckPeerBecomesATimeoutNamingTheOperationAndSequence) {
  if (w() < 2) GTEST_SKIP() << "needs a peer";
  MpiCommunicator side(MPI_COMM_WORLD, std::chrono::seconds(60));
  at::Tensor t = at::ones({4});
  std::unique_ptr<Work> work;
  if (r() != 0) {
    // Rank 0 does not take part yet: everyone else must give up at the deadline.
    work = side.allReduceAsync(t, ReduceOp::kSum);
    auto start = Clock::now();
    try {
      work->wait(Clock::now() + std::chrono::milliseconds(500));
      ADD_FAILURE() << "the wait should have timed out";
    } catch (const CommTimeout& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("timeout in allReduce #1 after 0."), std::string::npos) << what;
      EXPECT_EQ(e.exitCode(), 3);
    }
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 5.0);
  }
  comm.barrier();
  // Rank 0 joins late; the pending operation then completes everywhere.
  if (r() == 0) work = side.allReduceAsync(t, ReduceOp::kSum);
  work->wait(Clock::now() + std::chrono::seconds(30));
  EXPECT_TRUE(at::all(t == w()).item<bool>());
}

}  // namespace
}  // namespace forge::dist
