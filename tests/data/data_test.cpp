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

namespace forge::data {
namespace {

namespace fs = std::filesystem;

class DataTest : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return dir_.file(name); }

  // A file with the given datasets; each entry: name -> (dims, type, fill value).
  std::string makeFile(const std::string& name, const std::vector<std::tuple<std::string, std::vector<hsize_t>, hid_t>>& sets,
                       int64_t labelValue = 1) {
    std::string p = path(name);
    H5Id file(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    std::set<std::string> groups;
    for (const auto& [ds, dims, type] : sets) {
      std::string group = ds.substr(0, ds.find('/'));
      if (groups.insert(group).second) createGroup(file.get(), group);
      size_t n = 1;
      for (auto d : dims) n *= d;
      std::vector<int64_t> values(n, labelValue);
      std::vector<double> doubles(n, 0.5);
      bool isFloat = H5Tget_class(type) == H5T_FLOAT;
      writeDataset(file.get(), ds, type, isFloat ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64, dims, 16,
                   isFloat ? static_cast<const void*>(doubles.data()) : values.data());
    }
    return p;
  }

  // Every sample of a split, unnormalized, in order.
  static Batch readAll(const SplitSource& s) {
    std::vector<int64_t> all(s.size());
    std::iota(all.begin(), all.end(), 0);
    return readBatch(s, {}, all);
  }

  // A file holding samples [first, first + n) of `whole` as train/features (float32, N x D)
  // and train/labels: in chunks of `chunkRows` rows, deflated or not, or (chunkRows 0) as
  // one contiguous dataset.
  void writeRows(const std::string& name, const Batch& whole, int64_t first, int64_t n, hsize_t chunkRows,
                 bool deflate) {
    H5Id file(H5Fcreate(path(name).c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    createGroup(file.get(), "train");
    at::Tensor x = whole.x.narrow(0, first, n).contiguous();
    at::Tensor y = whole.y.narrow(0, first, n).contiguous();
    const hsize_t dims[2] = {static_cast<hsize_t>(n), static_cast<hsize_t>(x.size(1))};
    const hsize_t chunk[2] = {chunkRows, dims[1]};
    H5Id space(H5Screate_simple(2, dims, nullptr));
    H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
    if (chunkRows > 0) {
      ASSERT_GE(H5Pset_chunk(dcpl.get(), 2, chunk), 0);
    }
    if (deflate) {
      ASSERT_GE(H5Pset_deflate(dcpl.get(), 4), 0);
    }
    H5Id ds(H5Dcreate2(file.get(), "train/features", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
    ASSERT_GE(H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x.data_ptr()), 0);
    writeDataset(file.get(), "train/labels", H5T_STD_I64LE, H5T_NATIVE_INT64, {dims[0]}, dims[0], y.data_ptr());
  }

  std::string errorOf(const SourceSpec& spec) {
    try {
      SplitSource source(spec);
    } catch (const DataError& e) {
      EXPECT_EQ(e.exitCode(), 2);
      return e.what();
    }
    return "";
  }

  testing::TempDir dir_{"data_test"};
};

TEST_F(DataTest, SyntheticFilesHaveTheDocumentedLayoutAndOpen) {
  writeSynthetic({200, 12, 3, 7}, path("s.h5"));
  SplitSource train({{path("s.h5")}, "train", "features", "labels", 3});
  SplitSource test({{path("s.h5")}, "test", "features", "labels", 3});
  EXPECT_EQ(train.size(), 200);
  EXPECT_EQ(train.sampleShape(), (std::vector<int64_t>{12}));
  EXPECT_EQ(train.featureType(), at::kFloat);
  EXPECT_EQ(test.size(), 40);
  EXPECT_GE(train.labels().min().item<int64_t>(), 0);
  EXPECT_LT(train.labels().max().item<int64_t>(), 3);
  // Same seed, same bytes; written block by block, read back the same.
  writeSynthetic({200, 12, 3, 7}, path("t.h5"));
  SplitSource again({{path("t.h5")}, "train", "features", "labels", 3});
  std::vector<int64_t> all(200);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_TRUE(at::equal(readBatch(train, {}, all).x, readBatch(again, {}, all).x));
}

TEST_F(DataTest, MissingFileNamesItAndHowToCreateIt) {
  std::string e = errorOf({{path("nope.h5")}, "train", "features", "labels", 10});
  EXPECT_NE(e.find("cannot open data file '" + path("nope.h5") + "'"), std::string::npos) << e;
  EXPECT_NE(e.find("forge data fashion-mnist"), std::string::npos) << e;
  std::string g = errorOf({{path("shard-*.h5")}, "train", "features", "labels", 10});
  EXPECT_NE(g.find("pattern '" + path("shard-*.h5") + "' matches no file"), std::string::npos) << g;
}

TEST_F(DataTest, AFileThatIsNotHdf5IsNamed) {
  { std::ofstream(path("junk.h5")) << "not hdf5"; }
  std::string e = errorOf({{path("junk.h5")}, "train", "features", "labels", 10});
  EXPECT_NE(e.find("not a readable HDF5 file"), std::string::npos) << e;
}

TEST_F(DataTest, MissingSplitAndMissingDatasetAreNamed) {
  std::string p = makeFile("m.h5", {{"train/features", {8, 4}, H5T_IEEE_F32LE}});
  EXPECT_NE(errorOf({{p}, "test", "features", "labels", 2}).find("has no split group 'test'"), std::string::npos);
  std::string e = errorOf({{p}, "train", "features", "labels", 2});
  EXPECT_NE(e.find("data file '" + p + "' has no dataset 'train/labels'"), std::string::npos) << e;
}

TEST_F(DataTest, CountsThatDifferAreReportedWithBothNumbers) {
  std::string p = makeFile("c.h5", {{"train/features", {8, 4}, H5T_IEEE_F32LE}, {"train/labels", {7}, H5T_STD_I64LE}});
  std::string e = errorOf({{p}, "train", "features", "labels", 2});
  EXPECT_NE(e.find("'train/features' has 8 samples but 'train/labels' has 7"), std::string::npos) << e;
}

TEST_F(DataTest, LabelsOutOfRangeNameTheIndexAndTheClassCount) {
  std::string p = makeFile("l.h5", {{"train/features", {5, 4}, H5T_IEEE_F32LE}, {"train/labels", {5}, H5T_STD_I32LE}},
                           /*labelValue=*/12);
  std::string e = errorOf({{p}, "train", "features", "labels", 10});
  EXPECT_NE(e.find("label 12 at index 0 is outside [0, 10)"), std::string::npos) << e;
  EXPECT_NE(e.find("dataset 'train/labels'"), std::string::npos) << e;
}

TEST_F(DataTest, EmptySplitIsAnError) {
  std::string p = makeFile("e.h5", {{"train/features", {0, 4}, H5T_IEEE_F32LE}, {"train/labels", {0}, H5T_STD_I64LE}});
  EXPECT_NE(errorOf({{p}, "train", "features", "labels", 2}).find("split 'train' is empty"), std::string::npos);
}

TEST_F(DataTest, UnsupportedFeatureTypeSaysWhatIsSupported) {
  std::string p = makeFile("t.h5", {{"train/features", {5, 4}, H5T_STD_I16LE}, {"train/labels", {5}, H5T_STD_I64LE}});
  std::string e = errorOf({{p}, "train", "features", "labels", 2});
  EXPECT_NE(e.find("unsupported feature type int16 (use uint8, float32 or float64)"), std::string::npos) << e;
}

TEST_F(DataTest, FilesOfOneSplitMustAgreeOnShapeAndType) {
  std::string a = makeFile("a.h5", {{"train/features", {5, 4}, H5T_IEEE_F32LE}, {"train/labels", {5}, H5T_STD_I64LE}});
  std::string b = makeFile("b.h5", {{"train/features", {5, 6}, H5T_IEEE_F32LE}, {"train/labels", {5}, H5T_STD_I64LE}});
  std::string e = errorOf({{a, b}, "train", "features", "labels", 2});
  EXPECT_NE(e.find("data file '" + b + "', dataset 'train/features': samples are Float [6]"), std::string::npos) << e;
  EXPECT_NE(e.find("holds Float [4]"), std::string::npos) << e;
}

// Image-shaped uint8 samples (C x H x W) with per-channel normalization.
TEST_F(DataTest, ImagesKeepTheirShapeAndNormalizePerChannel) {
  std::string p = path("img.h5");
  {
    H5Id file(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    createGroup(file.get(), "train");
    std::vector<uint8_t> x(6 * 2 * 3 * 3);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<uint8_t>(i % 251);
    std::vector<int64_t> y{0, 1, 0, 1, 0, 1};
    writeDataset(file.get(), "train/features", H5T_STD_U8LE, H5T_NATIVE_UINT8, {6, 2, 3, 3}, 2, x.data());
    writeDataset(file.get(), "train/labels", H5T_STD_I64LE, H5T_NATIVE_INT64, {6}, 6, y.data());
  }
  SplitSource s({{p}, "train", "features", "labels", 2});
  EXPECT_EQ(s.sampleShape(), (std::vector<int64_t>{2, 3, 3}));
  Batch b = readBatch(s, Normalization{1.0, {10.0, 20.0}, {2.0, 4.0}}, {1});
  EXPECT_EQ(b.x.sizes(), (std::vector<int64_t>{1, 2, 3, 3}));
  // sample 1 starts at raw value 18; channel 0 -> (18 - 10) / 2, channel 1 (raw 27) -> (27 - 20) / 4
  EXPECT_FLOAT_EQ(b.x[0][0][0][0].item<float>(), 4.0f);
  EXPECT_FLOAT_EQ(b.x[0][1][0][0].item<float>(), 1.75f);
  EXPECT_THROW(readBatch(s, Normalization{1.0, {1.0, 2.0, 3.0}, {1.0}}, {0}), ConfigError);
}

// A split spread over several files (a glob) behaves as one: same samples, same labels, and
// without shuffling the same batches as the single file.
TEST_F(DataTest, AMultiFileSplitBehavesAsOne) {
  writeSynthetic({300, 5, 3, 11}, path("whole.h5"));
  SplitSource whole({{path("whole.h5")}, "train", "features", "labels", 3});
  std::vector<int64_t> all(300);
  std::iota(all.begin(), all.end(), 0);
  Batch everything = readBatch(whole, {}, all);
  // Cut into three shards of 100, 120 and 80 samples.
  int64_t first = 0;
  for (auto [name, n] : std::vector<std::pair<std::string, int64_t>>{{"part-0.h5", 100}, {"part-1.h5", 120},
                                                                      {"part-2.h5", 80}}) {
    H5Id file(H5Fcreate(path(name).c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    createGroup(file.get(), "train");
    at::Tensor x = everything.x.narrow(0, first, n).contiguous();
    at::Tensor y = everything.y.narrow(0, first, n).contiguous();
    writeDataset(file.get(), "train/features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {hsize_t(n), 5}, 16, x.data_ptr());
    writeDataset(file.get(), "train/labels", H5T_STD_I64LE, H5T_NATIVE_INT64, {hsize_t(n)}, 16, y.data_ptr());
    first += n;
  }
  SplitSource parts({{path("part-*.h5")}, "train", "features", "labels", 3});
  EXPECT_EQ(parts.files(), 3);
  EXPECT_EQ(parts.size(), 300);
  EXPECT_TRUE(at::equal(parts.labels(), whole.labels()));
  for (int world : {1, 3}) {
    for (int r = 0; r < world; ++r) {
      DistributedSampler a(whole.blocks(), r, world, 5, false, false, 64), b(parts.blocks(), r, world, 5, false,
                                                                             false, 64);
      EXPECT_EQ(a.indices(), b.indices());
      BatchLoader la(whole, {}, {16, false, 4, 64}), lb(parts, {}, {16, false, 4, 64});
      la.start(a.indices());
      lb.start(b.indices());
      while (auto x = la.next()) {
        auto y = lb.next();
        ASSERT_TRUE(y.has_value());
        EXPECT_TRUE(at::equal(x->x, y->x));
        EXPECT_TRUE(at::equal(x->y, y->y));
      }
      EXPECT_FALSE(lb.next().has_value());
    }
  }
  // Shuffled, every epoch still covers each sample exactly once.
  DistributedSampler s(parts.blocks(), 0, 1, 9, true, false, 64);
  std::vector<int64_t> idx = s.indices();
  std::sort(idx.begin(), idx.end());
  EXPECT_EQ(idx, all);
}

TEST_F(DataTest, NonFiniteFeaturesAreFoundWhileStreamingAndNamed) {
  std::string p = path("nan.h5");
  {
    H5Id file(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    createGroup(file.get(), "train");
    std::vector<float> x(40 * 3, 1.0f);
    x[17 * 3 + 2] = std::nanf("");
    x[30 * 3 + 0] = INFINITY;
    std::vector<int64_t> y(40, 1);
    writeDataset(file.get(), "train/features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {40, 3}, 8, x.data());
    writeDataset(file.get(), "train/labels", H5T_STD_I64LE, H5T_NATIVE_INT64, {40}, 8, y.data());
  }
  SplitSource s({{p}, "train", "features", "labels", 2});
  std::vector<int64_t> order(40);
  std::iota(order.begin(), order.end(), 0);
  BatchLoader strict(s, {}, {8, false, 2, 16});
  strict.start(order);
  try {
    while (strict.next()) {
    }
    FAIL() << "a NaN went through";
  } catch (const DataError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("non-finite feature (NaN or Inf) at feature 2 of sample 17"), std::string::npos) << m;
    EXPECT_NE(m.find("file '" + p + "', dataset 'train/features', row 17"), std::string::npos) << m;
    EXPECT_NE(m.find("data.non_finite: skip"), std::string::npos) << m;
  }
  BatchLoader lenient(s, {}, {8, false, 2, 16, false, NonFinite::kSkip});
  lenient.start(order);
  int64_t delivered = 0;
  while (auto b = lenient.next()) {
    delivered += b->y.size(0);
    EXPECT_TRUE(at::isfinite(b->x).all().item<bool>());
  }
  EXPECT_EQ(delivered, 38);
  EXPECT_EQ(lenient.skippedNonFinite(), 2);
}

TEST(Sampler, EverySampleIsSeenExactlyOncePerEpochUpToDocumentedPadding) {
  for (int world = 1; world <= 4; ++world) {
    for (int64_t n : {1000, 1001, 7}) {
      if (n < world) continue;
      // Blocks of 64 rows, the last one short, as a file of n rows gets them.
      std::vector<Block> blocks;
      for (int64_t r = 0; r < n; r += 64) blocks.push_back({0, r, std::min<int64_t>(64, n - r), r});
      std::map<int64_t, int> seen;
      int64_t perRank = -1;
      for (int r = 0; r < world; ++r) {
        DistributedSampler s(blocks, r, world, 3, true, false, 128);
        s.setEpoch(2);
        auto idx = s.indices();
        if (perRank < 0) perRank = static_cast<int64_t>(idx.size());
        EXPECT_EQ(static_cast<int64_t>(idx.size()), perRank) << "every rank gets the same count";
        for (auto i : idx) seen[i]++;
      }
      EXPECT_EQ(static_cast<int64_t>(seen.size()), n) << "world " << world << " n " << n;
      int64_t padding = perRank * world - n;
      EXPECT_EQ(padding, (world - n % world) % world);
      int extra = 0;
      for (auto& [i, c] : seen) extra += c - 1;
      EXPECT_EQ(extra, padding);
    }
  }
}

TEST(Sampler, DropLastCutsToAMultipleOfTheWorldWithoutRepeats) {
  std::vector<Block> blocks;
  for (int64_t r = 0; r < 1001; r += 100) blocks.push_back({0, r, std::min<int64_t>(100, 1001 - r), r});
  std::set<int64_t> seen;
  for (int r = 0; r < 3; ++r) {
    DistributedSampler s(blocks, r, 3, 0, true, true, 50);
    for (auto i : s.indices()) EXPECT_TRUE(seen.insert(i).second);
  }
  EXPECT_EQ(seen.size(), 999u);
}

TEST(Sampler, OrderIsAFunctionOfSeedEpochAndWorldSize) {
  std::vector<Block> blocks;
  for (int64_t r = 0; r < 500; r += 32) blocks.push_back({0, r, std::min<int64_t>(32, 500 - r), r});
  auto order = [&](uint64_t seed, int64_t epoch, int world) {
    DistributedSampler s(blocks, 0, world, seed, true, false, 64);
    s.setEpoch(epoch);
    return s.indices();
  };
  EXPECT_EQ(order(42, 3, 2), order(42, 3, 2));
  EXPECT_NE(order(42, 3, 2), order(43, 3, 2));
  EXPECT_NE(order(42, 3, 2), order(42, 4, 2));
  EXPECT_NE(order(42, 3, 2), order(42, 3, 3));
}

// The loader reads each window as a few contiguous runs: every sample of the rank's share
// once, in far fewer calls than samples, and memory bounded by the window.
TEST_F(DataTest, LoaderReadsEachSampleOnceInBlockRunsAndDeliversEveryBatch) {
  writeSynthetic({5000, 8, 4, 3}, path("big.h5"));
  SplitSource s({{path("big.h5")}, "train", "features", "labels", 4});
  for (int world : {1, 2, 3}) {
    for (int r = 0; r < world; ++r) {
      DistributedSampler sampler(s.blocks(), r, world, 1, true, false, 512);
      sampler.setEpoch(1);
      std::vector<int64_t> order = sampler.indices();
      BatchLoader loader(s, Normalization{0.5, {1.0}, {2.0}}, {64, false, 3, 512});
      loader.start(order);
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
      EXPECT_EQ(loader.rowsRead(), static_cast<int64_t>(unique.size())) << "nothing read twice";
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
