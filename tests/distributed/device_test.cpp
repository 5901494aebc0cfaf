// Device choice and the NCCL backend's error text: pure functions, checked on every machine.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>

#include "core/error.h"
#include "core/names.h"
#include "distributed/determinism.h"
#include "distributed/device.h"
#include "distributed/mpi/mpi_communicator.h"
#ifdef FORGE_WITH_NCCL
#include "distributed/nccl/nccl_check.h"
#endif
#include "trainer/config/config.h"

namespace forge::dist {
namespace {

std::string errorOf(int localRank, int localSize, int visible) {
  try {
    cudaDeviceFor(localRank, localSize, visible);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Device, EachLocalRankTakesItsOwnGpu) {
  EXPECT_EQ(cudaDeviceFor(0, 4, 4), 0);
  EXPECT_EQ(cudaDeviceFor(3, 4, 4), 3);
  EXPECT_EQ(cudaDeviceFor(1, 2, 8), 1);
}

TEST(Device, MoreRanksThanGpusOnANodeIsAClearError) {
  std::string e = errorOf(2, 3, 2);
  EXPECT_NE(e.find("this node runs 3 ranks but has 2 visible GPUs"), std::string::npos) << e;
  EXPECT_NE(e.find("run.device: cpu"), std::string::npos) << e;
  EXPECT_NE(errorOf(0, 1, 0).find("no CUDA GPU is visible"), std::string::npos) << errorOf(0, 1, 0);
}

// Two NCCL ranks on one GPU (scripts/gpu-device-run.sh): with FORGE_SHARE_GPUS=1 the node's
// ranks share its GPUs instead of being refused; without it the refusal names the setting.
TEST(Device, SharedGpusTakeLocalRankModuloVisible) {
  EXPECT_EQ(cudaDeviceFor(0, 2, 1, true), 0);
  EXPECT_EQ(cudaDeviceFor(1, 2, 1, true), 0);
  EXPECT_EQ(cudaDeviceFor(3, 4, 2, true), 1);
  EXPECT_EQ(cudaDeviceFor(1, 4, 8, true), 1) << "enough GPUs: sharing changes nothing";
  EXPECT_NE(errorOf(1, 2, 1).find("FORGE_SHARE_GPUS=1"), std::string::npos) << errorOf(1, 2, 1);
  EXPECT_THROW(cudaDeviceFor(0, 2, 0, true), ConfigError) << "sharing needs a GPU to share";
}

TEST(Device, ShareGpusSettingIsReadAndCheckedFromTheEnvironment) {
  const char* before = std::getenv("FORGE_SHARE_GPUS");
  std::string saved = before ? before : "";
  unsetenv("FORGE_SHARE_GPUS");
  EXPECT_FALSE(gpuSharingAllowed());
  setenv("FORGE_SHARE_GPUS", "0", 1);
  EXPECT_FALSE(gpuSharingAllowed());
  setenv("FORGE_SHARE_GPUS", "1", 1);
  EXPECT_TRUE(gpuSharingAllowed());
  if (visibleCudaDevices() == 0) {
    WorldInfo two;
    two.localRank = 1;
    two.localSize = 2;
    EXPECT_TRUE(selectDevice("auto", two).device.is_cpu()) << "nothing to share without a GPU";
  }
  setenv("FORGE_SHARE_GPUS", "yes", 1);
  try {
    gpuSharingAllowed();
    ADD_FAILURE() << "FORGE_SHARE_GPUS=yes was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("must be 0 or 1, got 'yes'"), std::string::npos) << e.what();
  }
  if (before) setenv("FORGE_SHARE_GPUS", saved.c_str(), 1); else unsetenv("FORGE_SHARE_GPUS");
}

TEST(Device, AutoFallsBackToTheCpuAndSaysWhy) {
  WorldInfo w;
  w.localSize = visibleCudaDevices() + 1;  // always more ranks than GPUs
  DeviceChoice c = selectDevice("auto", w);
  EXPECT_TRUE(c.device.is_cpu());
  EXPECT_FALSE(c.why.empty());
  EXPECT_TRUE(selectDevice("cpu", w).device.is_cpu());
  if (visibleCudaDevices() == 0) {
    EXPECT_THROW(selectDevice("cuda", WorldInfo{}), ConfigError);
  }
}

TEST(Device, RanksBoundToTheirOwnGpusByTheLauncherAreRecognized) {
  MpiCommunicator self(MPI_COMM_SELF, std::chrono::seconds(30));
  const char* before = std::getenv("CUDA_VISIBLE_DEVICES");
  std::string saved = before ? before : "";
  unsetenv("CUDA_VISIBLE_DEVICES");
  EXPECT_FALSE(gpusBoundPerRank(self)) << "no CUDA_VISIBLE_DEVICES: all GPUs are shared";
  setenv("CUDA_VISIBLE_DEVICES", "3", 1);
  EXPECT_TRUE(gpusBoundPerRank(self)) << "a rank alone with its own list";
  if (before) setenv("CUDA_VISIBLE_DEVICES", saved.c_str(), 1); else unsetenv("CUDA_VISIBLE_DEVICES");
  // Bound per rank, but no GPU visible at all: the usual rules (auto -> CPU).
  if (visibleCudaDevices() == 0) EXPECT_TRUE(selectDevice("auto", WorldInfo{}, true).device.is_cpu());
}

// run.deterministic: every setting bit-exact GPU resumption needs is in force afterwards, a
// variable the user set is kept, and off changes nothing.
TEST(Determinism, PinsCublasNcclAndAtenAndKeepsWhatTheUserSet) {
  auto& ctx = at::globalContext();
  const bool algos = ctx.deterministicAlgorithms(), warnOnly = ctx.deterministicAlgorithmsWarnOnly();
  const bool cudnnDet = ctx.deterministicCuDNN(), bench = ctx.benchmarkCuDNN();
  std::vector<std::pair<std::string, std::string>> saved;
  for (const char* n : {env::kCublasWorkspaceConfig, env::kNcclAlgo, env::kNcclProto}) {
    const char* v = std::getenv(n);
    saved.emplace_back(n, v ? v : "");
    unsetenv(n);
  }
  ctx.setBenchmarkCuDNN(true);
  EXPECT_TRUE(applyDeterminism(false).empty());
  EXPECT_EQ(std::getenv(env::kNcclAlgo), nullptr) << "off changes nothing";
  EXPECT_TRUE(ctx.benchmarkCuDNN());

  setenv(env::kNcclProto, "LL128", 1);  // the user's choice stays
  std::vector<std::string> said = applyDeterminism(true);
  EXPECT_STREQ(std::getenv(env::kCublasWorkspaceConfig), ":4096:8");
  EXPECT_STREQ(std::getenv(env::kNcclAlgo), "Ring");
  EXPECT_STREQ(std::getenv(env::kNcclProto), "LL128");
  EXPECT_TRUE(ctx.deterministicAlgorithms());
  EXPECT_TRUE(ctx.deterministicCuDNN());
  EXPECT_FALSE(ctx.benchmarkCuDNN());
  std::string all;
  for (const auto& s : said) all += s + "; ";
  EXPECT_NE(all.find("NCCL_PROTO=LL128 (as set)"), std::string::npos) << all;
  EXPECT_NE(all.find("CUBLAS_WORKSPACE_CONFIG=:4096:8"), std::string::npos) << all;

  for (const auto& [n, v] : saved) {
    if (v.empty()) unsetenv(n.c_str()); else setenv(n.c_str(), v.c_str(), 1);
  }
  ctx.setDeterministicAlgorithms(algos, warnOnly);
  ctx.setDeterministicCuDNN(cudnnDet);
  ctx.setBenchmarkCuDNN(bench);
}

TEST(Determinism, RunDeterministicIsABooleanAndABadValueNamesTheKey) {
  auto parse = [](const std::string& set) { return train::parseConfig("data:\n  path: x.h5\n", "t.yaml", {set}); };
  EXPECT_FALSE(parse("run.seed=1").run.deterministic) << "off by default";
  EXPECT_TRUE(parse("run.deterministic=true").run.deterministic);
  try {
    parse("run.deterministic=maybe");
    ADD_FAILURE() << "run.deterministic=maybe was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("deterministic"), std::string::npos) << e.what();
  }
}

TEST(Device, ConfigRejectsGpuOnlySettingsOnTheCpu) {
  auto err = [](const std::vector<std::string>& sets) {
    try {
      train::parseConfig("data:\n  path: x.h5\n", "t.yaml", sets);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err({"run.device=cpu", "run.precision=fp16"}).find("GPU-only"), std::string::npos);
  EXPECT_EQ(err({"run.device=cpu", "run.precision=bf16"}), "") << "bf16 autocast works on the CPU too";
  EXPECT_NE(err({"run.device=cpu", "distributed.backend=nccl"}).find("CUDA tensors"), std::string::npos);
  EXPECT_NE(err({"run.device=gpu"}).find("did you mean 'cpu'"), std::string::npos) << err({"run.device=gpu"});
  EXPECT_EQ(err({"run.device=cuda", "run.precision=bf16", "distributed.backend=nccl"}), "");
}

#ifdef FORGE_WITH_NCCL
TEST(Device, NcclErrorsNameRankCallPlaceAndReason) {
  std::string m = nccl::errorMessage(3, "ncclAllReduce(buf, buf, n, type, op, comm, stream)",
                                     "/somewhere/forge/distributed/nccl/nccl_communicator.cpp", 42,
                                     ncclInvalidArgument);
  EXPECT_EQ(m.rfind("[rank 3] NCCL error in ncclAllReduce at distributed/nccl/nccl_communicator.cpp:42: ", 0), 0u)
      << m;
  EXPECT_NE(m.find(ncclGetErrorString(ncclInvalidArgument)), std::string::npos) << m;
  try {
    FORGE_NCCL_CHECK(1, nullptr, ncclInvalidUsage);
    FAIL() << "no exception";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("[rank 1] NCCL error in ncclInvalidUsage at "), std::string::npos)
        << e.what();
  }
}
#endif

}  // namespace
}  // namespace forge::dist
