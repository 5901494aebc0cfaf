// The GPU path: CUDA placement and the NCCL backend. Runs with one process per GPU, without
// mpirun at 1 rank (ctest label `gpu`) or under `mpirun -np <GPUs>` (scripts/gpu-check.sh).
// Every test skips, with the reason, on a machine without a visible GPU, so the binary is
// built and run by CI all the same: the GPU code paths always compile.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include "core/error.h"
#include "distributed/device.h"
#include "distributed/gradient_synchronizer.h"
#include "distributed/mpi/mpi_communicator.h"
#include "distributed/world.h"
#ifdef FORGE_WITH_NCCL
#include "distributed/nccl/nccl_communicator.h"
#endif
#include "trainer/config/config.h"
#include "trainer/models/mlp.h"
#include "trainer/spec/registry.h"

namespace forge::dist {
namespace {

#define FORGE_NEED_GPU()                                                                     \
  do {                                                                                       \
    if (!builtWithNccl()) GTEST_SKIP() << "built without CUDA + NCCL";                       \
    if (visibleCudaDevices() == 0) GTEST_SKIP() << "no CUDA GPU visible to this process";    \
  } while (0)

#ifdef FORGE_WITH_NCCL

// One MPI bootstrap communicator and one NCCL communicator for the whole test binary: NCCL
// communicators are expensive to create, and every test must be collective anyway.
struct Comms {
  WorldInfo world;
  std::unique_ptr<MpiCommunicator> mpi;
  std::unique_ptr<NcclCommunicator> nccl;
  c10::Device device{c10::kCPU};
};

std::unique_ptr<Comms> gComms;

Comms& comms() {
  if (!gComms) {
    gComms = std::make_unique<Comms>();
    gComms->world = discoverWorld();
    gComms->mpi = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, std::chrono::seconds(120));
    gComms->device = selectDevice("cuda", gComms->world).device;
    gComms->nccl = std::make_unique<NcclCommunicator>(*gComms->mpi, gComms->device, std::chrono::seconds(120));
  }
  return *gComms;
}

// The communicators go before MPI_Finalize (main's MpiRuntime), not at static destruction.
class CommsEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    if (!gComms) return;
    gComms->nccl.reset();
    gComms->mpi.reset();
    gComms.reset();
  }
};
[[maybe_unused]] ::testing::Environment* const kCommsEnvironment =
    ::testing::AddGlobalTestEnvironment(new CommsEnvironment);

at::TensorOptions on(at::ScalarType t) { return at::TensorOptions().dtype(t).device(comms().device); }

TEST(Gpu, DeviceIsBoundToTheLocalRank) {
  FORGE_NEED_GPU();
  Comms& c = comms();
  EXPECT_TRUE(c.device.is_cuda());
  EXPECT_EQ(c.device.index(), c.world.localRank % visibleCudaDevices());
  EXPECT_EQ(at::empty({1}, at::TensorOptions().device(at::kCUDA)).device().index(), c.device.index())
      << "new CUDA tensors must land on the rank's own GPU";
}

TEST(Gpu, NcclAllReduceMatchesClosedFormsForEveryTypeAndSize) {
  FORGE_NEED_GPU();
  Communicator& n = *comms().nccl;
  const int r = n.rank(), w = n.size();
  for (int64_t size : {int64_t{1}, int64_t{1000}, int64_t{1} << 24}) {
    at::Tensor f = at::full({size}, r + 1.0, on(at::kFloat));
    n.allReduce(f, ReduceOp::kSum);
    EXPECT_TRUE(at::all(f == w * (w + 1) / 2.0).item<bool>()) << "float sum, " << size << " elements";
    at::Tensor d = at::full({size}, r + 1.0, on(at::kDouble));
    n.allReduce(d, ReduceOp::kAvg);
    EXPECT_TRUE(at::allclose(d, at::full({size}, (w + 1) / 2.0, on(at::kDouble)))) << "double avg, " << size;
  }
  at::Tensor b = at::full({4096}, 1.0, on(at::kBFloat16));
  n.allReduce(b, ReduceOp::kSum);
  EXPECT_TRUE(at::all(b.to(at::kFloat) == static_cast<float>(w)).item<bool>()) << "bf16 sum";
  at::Tensor m = at::full({3}, static_cast<int64_t>(r), on(at::kLong));
  n.allReduce(m, ReduceOp::kMax);
  EXPECT_EQ(m[0].item<int64_t>(), w - 1);
  at::Tensor lo = at::full({3}, static_cast<int64_t>(r), on(at::kLong));
  n.allReduce(lo, ReduceOp::kMin);
  EXPECT_EQ(lo[0].item<int64_t>(), 0);
}

TEST(Gpu, RandomDataAllReduceEqualsTheSumOfEveryRanksTensor) {
  FORGE_NEED_GPU();
  Communicator& n = *comms().nccl;
  // Every rank can draw every rank's input from (seed, rank): the expected sum is local.
  auto input = [&](int rank) {
    at::Generator g = at::detail::createCPUGenerator(1234 + rank);
    return at::randn({1 << 20}, g, at::kDouble);
  };
  at::Tensor expected = at::zeros({1 << 20}, at::kDouble);
  for (int k = 0; k < n.size(); ++k) expected += input(k);
  at::Tensor mine = input(n.rank()).to(comms().device);
  n.allReduce(mine, ReduceOp::kSum);
  double rel = ((mine.cpu() - expected).norm() / expected.norm()).item<double>();
  EXPECT_LT(rel, 1e-12) << "relative error " << rel;
}

TEST(Gpu, CollectiveIsOrderedAfterTheProducersKernelsWithoutAHostSync) {
  FORGE_NEED_GPU();
  Communicator& n = *comms().nccl;
  // A long chain of kernels on the current stream produces the tensor; the all-reduce is
  // issued at once. Without the event ordering NCCL would read the half-written input.
  at::Tensor t = at::zeros({1 << 22}, on(at::kFloat));
  for (int i = 0; i < 200; ++i) t.add_(1.0);
  auto work = n.allReduceAsync(t, ReduceOp::kSum);
  work->wait(Clock::now() + std::chrono::seconds(60));
  EXPECT_TRUE(at::all(t == 200.0f * n.size()).item<bool>());
}

TEST(Gpu, BroadcastAllGatherBarrierAndCpuTensorsGoToMpi) {
  FORGE_NEED_GPU();
  Communicator& n = *comms().nccl;
  const int r = n.rank(), w = n.size();
  at::Tensor b = r == 0 ? at::arange(10, on(at::kFloat)) : at::zeros({10}, on(at::kFloat));
  n.broadcast(b, 0);
  EXPECT_TRUE(at::equal(b.cpu(), at::arange(10, at::kFloat)));
  at::Tensor in = at::full({2}, static_cast<int64_t>(10 * r), on(at::kLong));
  at::Tensor out = at::empty({2 * w}, on(at::kLong));
  n.allGather(in, out);
  at::Tensor host = out.cpu();
  for (int k = 0; k < w; ++k) EXPECT_EQ(host[2 * k].item<int64_t>(), 10 * k);
  n.barrier();
  // Control values stay on the CPU and travel over MPI.
  at::Tensor flag = at::full({1}, r == w - 1 ? 1 : 0, at::kInt);
  n.allReduce(flag, ReduceOp::kMax);
  EXPECT_EQ(flag.item<int>(), 1);
  EXPECT_TRUE(n.anyRank(r == 0));
}

TEST(Gpu, WrongDeviceTensorIsAClearError) {
  FORGE_NEED_GPU();
  Communicator& n = *comms().nccl;
  at::Tensor strided = at::zeros({4, 4}, on(at::kFloat)).t();
  try {
    n.allReduce(strided, ReduceOp::kSum);
    FAIL() << "a non-contiguous tensor was accepted";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("contiguous"), std::string::npos) << e.what();
  }
}

// The synchronizer over NCCL on CUDA: averaged gradients equal the gradient of the mean loss
// over every rank's batch, computed locally in float64 as the reference.
TEST(Gpu, GradientSynchronizerAveragesCudaGradientsOverNccl) {
  FORGE_NEED_GPU();
  Comms& c = comms();
  Communicator& n = *c.nccl;
  auto mlp = [] { return std::dynamic_pointer_cast<train::Mlp>(makeModel("mlp", {{"dropout", 0.0}}).module); };
  torch::manual_seed(7);
  auto model = mlp();
  model->to(c.device);
  SyncOptions opt;
  opt.firstBucketCapBytes = 64 << 10;  // several buckets, singles and coalesced ones
  GradientSynchronizer sync(model, n, opt);
  sync.broadcastState();
  auto batch = [&](int rank) {
    at::Generator g = at::detail::createCPUGenerator(99 + rank);
    return std::make_pair(at::randn({32, 784}, g, at::kFloat), at::randint(0, 10, {32}, g, at::kLong));
  };
  model->eval();  // BatchNorm with fixed statistics: the reference is then exact algebra
  for (int step = 0; step < 3; ++step) {
    sync.zeroGrad();
    auto [x, y] = batch(n.rank() + 100 * step);
    at::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x.to(c.device)), y.to(c.device));
    sync.backward(loss);
    // Reference: a float64 copy of the model on the CPU, all ranks' batches, mean of the losses.
    auto ref = mlp();
    {
      torch::NoGradGuard g;
      auto src = model->named_parameters();
      for (auto& p : ref->named_parameters()) p.value().copy_(src[p.key()].cpu());
      auto srcB = model->named_buffers();
      for (auto& b : ref->named_buffers()) b.value().copy_(srcB[b.key()].cpu());
    }
    ref->to(at::kDouble);
    ref->eval();
    at::Tensor total = at::zeros({}, at::kDouble);
    for (int k = 0; k < n.size(); ++k) {
      auto [xk, yk] = batch(k + 100 * step);
      total = total + torch::nn::functional::cross_entropy(ref->forward(xk.to(at::kDouble)), yk);
    }
    (total / n.size()).backward();
    auto refParams = ref->named_parameters();
    for (auto& p : model->named_parameters()) {
      at::Tensor got = p.value().grad().cpu().to(at::kDouble);
      at::Tensor want = refParams[p.key()].grad();
      double rel = ((got - want).norm() / (want.norm() + 1e-30)).item<double>();
      EXPECT_LT(rel, 1e-4) << p.key() << " at step " << step;
    }
  }
}

#endif  // FORGE_WITH_NCCL

TEST(Gpu, ModelMovesToTheGpuWithParametersAndBuffersTogether) {
  FORGE_NEED_GPU();
  auto model = makeModel("mlp").module;
  WorldInfo solo;
  c10::Device d = selectDevice("cuda", solo).device;
  model->to(d);
  for (const auto& p : model->parameters()) EXPECT_TRUE(p.is_cuda());
  for (const auto& b : model->buffers()) EXPECT_TRUE(b.is_cuda());
}

}  // namespace
}  // namespace forge::dist
