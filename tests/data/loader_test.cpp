// The streaming batch loader: every sample once, in block runs, mapped or read, resumed,
// stopped and restarted, and a file cut short under it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <sstream>
#include <set>
#include <thread>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "tests/temp_dir.h"
#include "data/batch_loader.h"
#include "data/converters.h"
#include "data/source.h"
#include "data/hdf5_file.h"
#include "data/sampler.h"

#include "tests/data/data_fixture.h"

namespace forge::data {
namespace {

namespace fs = std::filesystem;

// The loader reads each window as a few contiguous runs: every sample of the rank's share
// once, in far fewer calls than samples, and memory bounded by the window.
TEST_F(DataTest, LoaderReadsEachSampleOnceInBlockRunsAndDeliversEveryBatch) {
  writeSynthetic({5000, 8, 4, 3}, path("big.h5"));
  SplitSource s({{path("big.h5")}, "train", "features", "labels", 4});
  for (int world : {1, 2, 3}) {
    for (int r = 0; r < world; ++r) {
      // As the trainer sets them up: global windows of 512, steps of 64 per rank, a rank's
      // runs stepping over the other ranks' rows.
      DistributedSampler sampler(s.blocks(), r, world, 1, true, false, 512, 64, 64 * world);
      sampler.setEpoch(1);
      DistributedSampler::Plan plan = sampler.plan();
      std::vector<int64_t> order = plan.indices;
      LoaderOptions o{64, false, 3, 512};
      o.maxGap = 8 * world - 1;
      BatchLoader loader(s, Normalization{0.5, {1.0}, {2.0}}, o);
      loader.start(order, 0, plan.windowStarts);
      std::vector<int64_t> labels;
      int64_t batches = 0;
      while (auto b = loader.next()) {
        ++batches;
        for (int64_t i = 0; i < b->y.size(0); ++i) labels.push_back(b->y[i].item<int64_t>());
      }
      EXPECT_EQ(batches, loader.batchesPerEpoch(sampler.samplesPerRank()));
      std::vector<int64_t> want;
      for (int64_t i : order) want.push_back(s.labels()[i].item<int64_t>());
      EXPECT_EQ(labels, want) << "batches follow the sampler's order";
      std::set<int64_t> unique(order.begin(), order.end());
      // Nothing read twice (the padding's few repeats lie in another window than the first
      // time, so they are read again).
      EXPECT_GE(loader.rowsRead(), static_cast<int64_t>(unique.size()));
      EXPECT_LE(loader.rowsRead(), static_cast<int64_t>(unique.size()) + world - 1) << "nothing read twice";
      EXPECT_LT(loader.readCalls(), static_cast<int64_t>(order.size()) / 50) << "reads are runs, not samples";
    }
  }
  // Normalization: x = (raw * 0.5 - 1) / 2.
  Batch raw = readBatch(s, {}, {7});
  Batch norm = readBatch(s, Normalization{0.5, {1.0}, {2.0}}, {7});
  EXPECT_TRUE(at::allclose(norm.x, (raw.x * 0.5 - 1.0) / 2.0));
}

// The sampler's state (epoch, position) saved mid-epoch and restored in a fresh process
// yields exactly the batches the uninterrupted loader delivers after that position.
std::string describeBatches(BatchLoader& loader) {
  std::ostringstream out;
  while (auto b = loader.next()) {
    auto h = at::_cast_Double(b->x).sum().item<double>();
    out << b->y.size(0) << ":" << b->y.sum().item<int64_t>() << ":" << std::setprecision(12) << h << "\n";
  }
  return out.str();
}

const char* kChildEnv = "FORGE_TEST_SAMPLER_CHILD";
}  // namespace
}  // namespace forge::data
extern char** environ;
namespace forge::data {
namespace {

TEST_F(DataTest, SamplerStateRestoredInAFreshProcessYieldsExactlyTheRemainingBatches) {
  if (const char* child = std::getenv(kChildEnv)) {
    // The fresh process: reads the saved state and streams the rest of the epoch.
    std::ifstream in(std::string(child) + "/state");
    std::string file;
    int64_t epoch = 0, position = 0;
    in >> file >> epoch >> position;
    SplitSource s({{file}, "train", "features", "labels", 4});
    DistributedSampler sampler(s.blocks(), 1, 2, 77, true, false, 256);
    sampler.setEpoch(epoch);
    BatchLoader loader(s, {}, {32, false, 2, 256});
    loader.start(sampler.indices(), position);
    std::ofstream(std::string(child) + "/rest") << describeBatches(loader);
    return;
  }
  writeSynthetic({3000, 6, 4, 5}, path("resume.h5"));
  SplitSource s({{path("resume.h5")}, "train", "features", "labels", 4});
  DistributedSampler sampler(s.blocks(), 1, 2, 77, true, false, 256);
  sampler.setEpoch(3);
  BatchLoader loader(s, {}, {32, false, 2, 256});
  loader.start(sampler.indices());
  for (int i = 0; i < 11; ++i) ASSERT_TRUE(loader.next().has_value());
  DistributedSampler::State state{sampler.epoch(), 11 * 32};  // what a checkpoint stores
  std::string expected = describeBatches(loader);
  ASSERT_FALSE(expected.empty());
  std::ofstream(path("state")) << path("resume.h5") << " " << state.epoch << " " << state.position << "\n";

  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::string filter = "--gtest_filter=DataTest.SamplerStateRestoredInAFreshProcessYieldsExactlyTheRemainingBatches";
  std::string env = std::string(kChildEnv) + "=" + dir_.path().string();
  std::vector<char*> argv{self.data(), filter.data(), nullptr};
  std::vector<std::string> envs{env};
  for (char** e = environ; *e != nullptr; ++e) envs.push_back(*e);
  std::vector<char*> envp;
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv.data(), envp.data()), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the fresh process failed";
  std::ifstream rest(path("rest"));
  std::string got((std::istreambuf_iterator<char>(rest)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, expected);
}

TEST(Loader, WindowsAreWholeBatchesWithinTheBuffer) {
  EXPECT_EQ(windowFor(64u << 20, 784, 64), (64 << 20) / 2 / 784 / 64 * 64);
  EXPECT_EQ(windowFor(1000, 784, 64), 64) << "at least one batch";
}

}  // namespace
}  // namespace forge::data

namespace forge::data {
namespace {

// Mapped rows are the bytes read() copies: chunked files (forge's own) and contiguous ones
// (h5py's default), runs that cross chunk boundaries and the last, partial chunk.
TEST_F(DataTest, MappedRowsAreTheBytesReadCopies) {
  writeSynthetic({1000, 24, 3, 2}, path("syn.h5"));
  {
    Batch everything = readAll(SplitSource({{path("syn.h5")}, "train", "features", "labels", 3}));
    writeRows("chunked.h5", everything, 0, 1000, 64, false);  // 16 chunks of 64 rows, the last one partial
    writeRows("contiguous.h5", everything, 0, 1000, 0, false);
  }
  for (const char* name : {"chunked.h5", "contiguous.h5"}) {
    SplitSource source({{path(name)}, "train", "features", "labels", 3});
    for (auto [first, count] : std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {5, 300}, {64, 128}, {0, 1000}, {997, 3}}) {
      MappedRows m = source.map(first, count);
      ASSERT_TRUE(m) << name << " rows " << first << "+" << count;
      std::vector<float> copied(count * 24);
      source.read(first, count, copied.data());
      EXPECT_EQ(std::memcmp(m.rows(), copied.data(), copied.size() * sizeof(float)), 0) << name << " " << first;
    }
    EXPECT_FALSE(source.map(990, 20)) << "rows past the end are not mapped";
  }
  setenv("FORGE_NO_MAPPED_READS", "1", 1);
  SplitSource copyOnly({{path("chunked.h5")}, "train", "features", "labels", 3});
  unsetenv("FORGE_NO_MAPPED_READS");
  EXPECT_FALSE(copyOnly.map(0, 10));
}

}  // namespace
}  // namespace forge::data

namespace forge::data {
namespace {

// Rows the loader cannot map (compressed chunks) are read into the window instead; a split
// whose files go either way, shuffled and resumed mid-epoch, gives the batches of the
// mapped file bit for bit, and batches a caller keeps stay as they were handed out.
TEST_F(DataTest, MappedAndCopiedRowsGiveTheSameBatches) {
  // Rows of 4 KiB: the sampler's blocks (about 1 MiB) hold 256 rows, so that each window
  // of 512 samples comes in several runs.
  writeSynthetic({2000, 1024, 5, 4}, path("plain.h5"));
  SplitSource plain({{path("plain.h5")}, "train", "features", "labels", 5});
  Batch everything = readAll(plain);
  // The same samples deflated in one file, and split over a plain and a deflated file.
  writeRows("packed.h5", everything, 0, 2000, 50, true);
  writeRows("mixed-0.h5", everything, 0, 900, 50, false);
  writeRows("mixed-1.h5", everything, 900, 1100, 50, true);
  SplitSource packed({{path("packed.h5")}, "train", "features", "labels", 5});
  SplitSource mixed({{path("mixed-*.h5")}, "train", "features", "labels", 5});
  EXPECT_FALSE(packed.map(0, 10)) << "deflated rows cannot be mapped";
  EXPECT_TRUE(mixed.map(0, 10)) << "the plain file's rows can";
  ASSERT_TRUE(at::equal(mixed.labels(), plain.labels()));

  const Normalization norm{0.5, {0.25}, {3.0}};
  for (int64_t skip : {0, 7 * 32}) {
    DistributedSampler sampler(plain.blocks(), 1, 2, 21, true, false, 512);
    sampler.setEpoch(2);
    std::vector<Batch> want;
    BatchLoader reference(plain, norm, {32, false, 2, 512});
    reference.start(sampler.indices(), skip);
    while (auto b = reference.next()) want.push_back(*b);
    EXPECT_GT(reference.readCalls(), (static_cast<int64_t>(sampler.indices().size()) - skip) / 512 + 1)
        << "windows come in several runs";
    ASSERT_EQ(static_cast<int64_t>(want.size()), reference.batchesPerEpoch(sampler.samplesPerRank()) - skip / 32);
    for (const SplitSource* source : {&packed, &mixed}) {
      // The same order (the files' chunks differ, and with them the sampler's blocks).
      BatchLoader loader(*source, norm, {32, false, 2, 512});
      loader.start(sampler.indices(), skip);
      std::vector<Batch> got;  // all kept alive until the end
      while (auto b = loader.next()) got.push_back(*b);
      ASSERT_EQ(got.size(), want.size()) << source->name();
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_TRUE(at::equal(got[i].x, want[i].x)) << source->name() << " batch " << i;
        EXPECT_TRUE(at::equal(got[i].y, want[i].y)) << source->name() << " batch " << i;
      }
    }
  }
}

}  // namespace
}  // namespace forge::data

namespace forge::data {
namespace {

// Large samples leave room for only two batches ahead (about 8 MiB of them). A caller that
// is slow at times, or stops mid-epoch and starts again from a later batch, still gets
// exactly the batches of the order; an epoch can be stopped while the threads wait.
TEST_F(DataTest, FewBatchesAheadStopAndRestartKeepTheOrder) {
  writeSynthetic({700, 16384, 3, 6}, path("wide.h5"));  // 64 KiB samples: 4 MiB batches of 64
  SplitSource s({{path("wide.h5")}, "train", "features", "labels", 3});
  DistributedSampler sampler(s.blocks(), 0, 1, 3, true, false, 128);
  sampler.setEpoch(1);
  const std::vector<int64_t> order = sampler.indices();
  auto expected = [&](int64_t b) {
    const int64_t first = b * 64, n = std::min<int64_t>(64, static_cast<int64_t>(order.size()) - first);
    return readBatch(s, {}, std::vector<int64_t>(order.begin() + first, order.begin() + first + n));
  };
  BatchLoader loader(s, {}, {64, false, 1, 128});
  const int64_t batches = loader.batchesPerEpoch(static_cast<int64_t>(order.size()));
  ASSERT_EQ(batches, 11);
  // A caller that pauses now and then, so that the threads fill the room and wait.
  loader.start(order);
  for (int64_t b = 0; b < batches; ++b) {
    if (b % 3 == 1) std::this_thread::sleep_for(std::chrono::milliseconds(30));
    auto got = loader.next();
    ASSERT_TRUE(got.has_value()) << "batch " << b;
    Batch want = expected(b);
    EXPECT_TRUE(at::equal(got->x, want.x)) << "batch " << b;
    EXPECT_TRUE(at::equal(got->y, want.y)) << "batch " << b;
  }
  EXPECT_FALSE(loader.next().has_value());
  // Stopped while its threads wait for room, then started again at batch 5.
  loader.start(order);
  ASSERT_TRUE(loader.next().has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  loader.stop();
  loader.start(order, 5 * 64);
  for (int64_t b = 5; b < batches; ++b) {
    auto got = loader.next();
    ASSERT_TRUE(got.has_value()) << "batch " << b;
    EXPECT_TRUE(at::equal(got->x, expected(b).x)) << "batch " << b << " after the restart";
  }
  EXPECT_FALSE(loader.next().has_value());
}

}  // namespace
}  // namespace forge::data

namespace forge::data {
namespace {

// A data file cut short while its rows are mapped ends the process by SIGBUS, as the kernel
// decides, but not silently: the message says what happened and what to do.
TEST_F(DataTest, AFileCutShortUnderItsMappedRowsIsExplained) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  writeSynthetic({4000, 256, 3, 8}, path("shrinks.h5"));  // 4 MiB of rows
  EXPECT_EXIT(
      {
        SplitSource s({{path("shrinks.h5")}, "train", "features", "labels", 3});
        MappedRows m = s.map(0, 1000);
        if (!m) std::_Exit(3);
        if (::truncate(path("shrinks.h5").c_str(), 4096) != 0) std::_Exit(4);
        volatile float v = static_cast<const float*>(m.rows())[999 * 256];
        (void)v;
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGBUS), "data files must not change during a run");
}

}  // namespace
}  // namespace forge::data
