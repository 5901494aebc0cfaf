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
  sync.beginBackward();
  lin->forward(batchOf(r())).mean().backward();
  sync.finishBackward();
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

  sync.beginBackward();
  torch::nn::functional::cross_entropy(model->forward(batchOf(r())), labelsOf(r())).backward();
  sync.finishBackward();
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
  uint64_t fp = sync.broadcastState();  // verifies too
  EXPECT_EQ(fp, stateFingerprint(*lin));
  EXPECT_EQ(fp, verifyReplicas(*lin, comm));
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

// K steps of N-rank training with the bucketed synchronizer equal K steps of one process on
// the concatenated global batch (N * k micro-batches of b samples per step).
void expectEquivalence(MpiCommunicator& comm, const std::string& optName, int k) {
  const int W = comm.size(), R = comm.rank();
  const int64_t b = 5, G = W * k * b, steps = 4;
  torch::manual_seed(3);
  auto model = std::make_shared<torch::nn::SequentialImpl>(
      torch::nn::Linear(6, 32), torch::nn::Functional(torch::tanh), torch::nn::Linear(32, 32),
      torch::nn::Functional(torch::tanh), torch::nn::Linear(32, 4));
  SyncOptions o;
  o.bucketCapBytes = 600;  // bytes: forces a bucket per parameter or two
  o.firstBucketCapBytes = 200;
  GradientSynchronizer sync(model, comm, o);
  sync.broadcastState();
  EXPECT_GE(sync.bucketLayout().size(), 4u);
  auto reference = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(model->clone());
  auto makeOpt = [&](std::vector<at::Tensor> p) -> std::unique_ptr<torch::optim::Optimizer> {
    if (optName == "sgd") return std::make_unique<torch::optim::SGD>(p, torch::optim::SGDOptions(0.1).momentum(0.9));
    return std::make_unique<torch::optim::Adam>(p, torch::optim::AdamOptions(0.01));
  };
  auto opt = makeOpt(model->parameters());
  auto refOpt = makeOpt(reference->parameters());
  for (int s = 0; s < steps; ++s) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + s);  // same global batch on every rank
    at::Tensor X = at::randn({G, 6}, gen, at::kFloat);
    at::Tensor Y = at::randint(0, 4, {G}, gen, at::kLong);
    // SGD runs take the in-place path; Adam ones let the optimizer replace .grad (the copy path).
    if (optName == "sgd") {
      sync.zeroGrad();
    } else {
      opt->zero_grad();
    }
    for (int m = 0; m < k; ++m) {
      int64_t first = (static_cast<int64_t>(m) * W + R) * b;
      at::Tensor loss =
          torch::nn::functional::cross_entropy(model->forward(X.narrow(0, first, b)), Y.narrow(0, first, b)) / k;
      if (k == 1) {  // the three-call form: averaged after the all-reduce
        sync.beginBackward();
        loss.backward();
        sync.finishBackward();
      } else {  // the one-call form: pre-scaled loss, summed
        sync.backward(loss, m == k - 1);
      }
    }
    opt->step();
    refOpt->zero_grad();
    torch::nn::functional::cross_entropy(reference->forward(X), Y).backward();
    refOpt->step();
  }
  auto mine = model->parameters();
  auto ref = reference->parameters();
  for (size_t i = 0; i < mine.size(); ++i) {
    double err = (mine[i] - ref[i]).abs().max().item<double>();
    double scale = ref[i].abs().max().item<double>();
    EXPECT_LE(err, 1e-5 * scale) << optName << " k=" << k << " parameter " << i << " world " << W;
  }
  verifyReplicas(*model, comm);
}

TEST_F(Dist, BucketedSgdEqualsOneProcessOnTheGlobalBatch) { expectEquivalence(comm, "sgd", 1); }
TEST_F(Dist, BucketedAdamEqualsOneProcessOnTheGlobalBatch) { expectEquivalence(comm, "adam", 1); }
TEST_F(Dist, AccumulatedSgdEqualsOneProcessOnTheGlobalBatch) { expectEquivalence(comm, "sgd", 3); }
TEST_F(Dist, AccumulatedAdamEqualsOneProcessOnTheGlobalBatch) { expectEquivalence(comm, "adam", 3); }

TEST_F(Dist, TheFirstBucketIsOnTheWireBeforeBackwardProducesTheLastGradient) {
  if (w() < 2) GTEST_SKIP() << "one rank communicates nothing";
  torch::manual_seed(1);
  auto model = std::make_shared<torch::nn::SequentialImpl>();
  for (int i = 0; i < 8; ++i) {
    model->push_back(torch::nn::Linear(512, 512));
    model->push_back(torch::nn::Functional(torch::relu));
  }
  SyncOptions o;
  o.bucketCapBytes = 1200 * 1024;
  o.firstBucketCapBytes = 512 * 1024;
  GradientSynchronizer sync(model, comm, o);
  sync.broadcastState();
  at::Tensor x = at::randn({256, 512});
  for (int step = 0; step < 3; ++step) {
    model->zero_grad();
    sync.beginBackward();
    model->forward(x).pow(2).mean().backward();
    sync.finishBackward();
  }
  const auto& t = sync.lastTimeline();
  ASSERT_EQ(t.bucketStarted.size(), sync.bucketLayout().size());
  ASSERT_GE(t.bucketStarted.size(), 8u);
  EXPECT_LT(t.bucketStarted[0], t.lastGradientReady)
      << "bucket 0 started " << std::chrono::duration<double, std::milli>(t.bucketStarted[0] - t.backwardBegin).count()
      << " ms into backward; the last gradient came at "
      << std::chrono::duration<double, std::milli>(t.lastGradientReady - t.backwardBegin).count() << " ms";
  for (size_t i = 1; i < t.bucketStarted.size(); ++i) EXPECT_LE(t.bucketStarted[i - 1], t.bucketStarted[i]);
}

// A layer registered but not used in forward.
struct WithUnused : torch::nn::Module {
  WithUnused() {
    used = register_module("used", torch::nn::Linear(4, 3));
    unused = register_module("unused", torch::nn::Linear(4, 3));
  }
  at::Tensor forward(const at::Tensor& x) { return used(x); }
  torch::nn::Linear used{nullptr}, unused{nullptr};
};

TEST_F(Dist, AnUnusedParameterIsAnErrorNamingItUnlessAllowed) {
  auto m = std::make_shared<WithUnused>();
  {
    GradientSynchronizer sync(m, comm);
    sync.broadcastState();
    sync.beginBackward();
    m->forward(at::ones({2, 4})).sum().backward();
    try {
      sync.finishBackward();
      ADD_FAILURE() << "no error for the unused layer";
    } catch (const Error& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("got no gradient in this step: unused.weight, unused.bias"), std::string::npos) << what;
      EXPECT_NE(what.find("distributed.allow_unused_parameters"), std::string::npos) << what;
    }
    comm.barrier();  // the used layer's bucket was launched on every rank; let it land
  }
  m->zero_grad();
  SyncOptions allow;
  allow.allowUnusedParameters = true;
  GradientSynchronizer sync(m, comm, allow);
  sync.broadcastState();
  sync.beginBackward();
  m->forward(at::full({2, 4}, r() + 1.0)).sum().backward();
  sync.finishBackward();
  EXPECT_TRUE(at::all(m->unused->weight.grad() == 0).item<bool>());
  // d/dW of sum(W x) over 2 rows of (r + 1): 2 (r + 1), averaged over ranks: W + 1.
  EXPECT_TRUE(at::allclose(m->used->weight.grad(), at::full({3, 4}, w() + 1.0)));
}

}  // namespace
}  // namespace forge::dist

namespace forge::dist {
namespace {

// A large parameter, then 40 of 10 KiB each: buckets fill in reverse registration order.
struct Many : torch::nn::Module {
  Many() {
    register_parameter("big", at::zeros({70000}));  // 280 KB: a bucket of its own
    for (int i = 0; i < 40; ++i) register_parameter("p" + std::to_string(i), at::zeros({2560}));
  }
};

TEST_F(Dist, BucketsFollowReverseOrderAndTheirCaps) {
  auto m = std::make_shared<Many>();
  SyncOptions o;
  o.firstBucketCapBytes = 25 * 1024;   // 2 parameters
  o.bucketCapBytes = 105 * 1024;       // 10 parameters
  o.rebuildBuckets = false;
  GradientSynchronizer sync(m, comm, o);
  auto layout = sync.bucketLayout();
  ASSERT_EQ(layout.size(), 6u);
  EXPECT_EQ(layout[0], (std::vector<std::string>{"p39", "p38"}));  // the small first bucket
  for (size_t b = 1; b <= 3; ++b) EXPECT_EQ(layout[b].size(), 10u) << "bucket " << b;
  EXPECT_EQ(layout[1].front(), "p37");
  EXPECT_EQ(layout[4].size(), 8u);
  EXPECT_EQ(layout[4].back(), "p0");
  EXPECT_EQ(layout[5], (std::vector<std::string>{"big"}));  // registered first, produced last
}

// Registered a, b, c but applied c, then b, then a: backward produces a's gradients first,
// the reverse of the synchronizer's first guess, so the rebuilt buckets differ from it.
struct Reversed : torch::nn::Module {
  Reversed() {
    a = register_module("a", torch::nn::Linear(8, 8));
    b = register_module("b", torch::nn::Linear(8, 8));
    c = register_module("c", torch::nn::Linear(8, 8));
  }
  at::Tensor forward(const at::Tensor& x) { return a(b(c(x))); }
  torch::nn::Linear a{nullptr}, b{nullptr}, c{nullptr};
};

TEST_F(Dist, AResumedSynchronizerReducesInTheBucketsTheInterruptedOneHad) {
  SyncOptions o;
  o.firstBucketCapBytes = 300;  // a weight (256 bytes) and a bias (32): one layer a bucket
  o.bucketCapBytes = 600;       // then two layers
  at::Tensor x = at::full({4, 8}, r() + 1.0);
  auto straightModel = std::make_shared<Reversed>();
  GradientSynchronizer straight(straightModel, comm, o);
  straight.broadcastState();
  const auto initial = straight.bucketLayout();
  EXPECT_TRUE(straight.rebuiltOrder().empty()) << "nothing arrived yet";
  straight.zeroGrad();
  straight.backward(straightModel->forward(x).sum());
  const std::vector<int64_t> order = straight.rebuiltOrder();  // what a checkpoint stores
  const auto rebuilt = straight.bucketLayout();
  if (w() == 1) {
    EXPECT_TRUE(order.empty()) << "one rank reduces nothing, so nothing is rebuilt";
    return;
  }
  ASSERT_EQ(order.size(), 6u);
  ASSERT_NE(rebuilt, initial) << "the arrival order must change the layout, or this test proves nothing";

  // The resumed run: a fresh replica whose synchronizer adopts the stored order.
  auto resumedModel = std::make_shared<Reversed>();
  GradientSynchronizer resumed(resumedModel, comm, o);
  EXPECT_EQ(resumed.bucketLayout(), initial) << "without the stored order it would start from the first guess";
  ASSERT_TRUE(resumed.adoptOrder(order));
  EXPECT_EQ(resumed.bucketLayout(), rebuilt) << "its first step reduces in the interrupted run's buckets";
  EXPECT_EQ(resumed.rebuiltOrder(), order) << "and its own checkpoints keep the order";
  resumed.broadcastState();
  resumed.zeroGrad();
  resumed.backward(resumedModel->forward(x).sum());
  EXPECT_EQ(resumed.bucketLayout(), rebuilt) << "no second rebuild after the resumed first step";
  // Another model's order is refused and changes nothing.
  EXPECT_FALSE(resumed.adoptOrder({0, 1, 2}));
  EXPECT_FALSE(resumed.adoptOrder({0, 0, 1, 2, 3, 4}));
  EXPECT_EQ(resumed.bucketLayout(), rebuilt);
}

}  // namespace
}  // namespace forge::dist
