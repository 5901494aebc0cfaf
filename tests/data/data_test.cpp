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
  std::string p = makeFile("t.h5", {{"train/features", {5, 4}, H5T_STD_U64LE}, {"train/labels", {5}, H5T_STD_I64LE}});
  std::string e = errorOf({{p}, "train", "features", "labels", 2});
  EXPECT_NE(e.find("unsupported feature type uint64 (values: uint8, float32 or float64; token ids: integers up to int64)"),
            std::string::npos)
      << e;
}

// Token sequences (any integer width) with next-token targets: no labels read, x the first
// L - 1 ids and y the last L - 1, both int64, never normalized.
TEST_F(DataTest, TokenSequencesGiveEachPositionTheNextTokenAsItsTarget) {
  for (hid_t type : {H5T_STD_U8LE, H5T_STD_I16LE, H5T_STD_U16LE, H5T_STD_I32LE, H5T_STD_I64LE}) {
    std::string p = path("tok.h5");
    {
      H5Id file(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
      createGroup(file.get(), "train");
      std::vector<int64_t> ids(6 * 5);
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i % 97 + 3);
      writeDataset(file.get(), "train/features", type, H5T_NATIVE_INT64, {6, 5}, 4, ids.data());
    }
    SourceSpec spec{{p}, "train", "features", "labels", 0};  // no labels dataset: none is read
    spec.targets = Targets::kNextTokens;
    SplitSource s(spec);
    EXPECT_TRUE(s.tokens());
    EXPECT_EQ(s.inputShape(), (std::vector<int64_t>{4}));
    Batch b = readBatch(s, Normalization{0.5, {10.0}, {2.0}}, {2, 0});
    ASSERT_EQ(b.x.scalar_type(), at::kLong);
    ASSERT_EQ(b.x.sizes().vec(), (std::vector<int64_t>{2, 4}));
    ASSERT_EQ(b.y.sizes().vec(), (std::vector<int64_t>{2, 4}));
    EXPECT_EQ(b.x[0][0].item<int64_t>(), 13);  // row 2 starts at id 2 * 5 + 3, unnormalized
    EXPECT_EQ(b.y[0][0].item<int64_t>(), 14);  // its target: the next id
    EXPECT_EQ(b.y[1][3].item<int64_t>(), 7);   // row 0's last id
    // The loader streams the same.
    BatchLoader loader(s, {}, LoaderOptions{3});
    loader.start({0, 1, 2, 3, 4, 5});
    auto first = loader.next();
    ASSERT_TRUE(first.has_value());
    EXPECT_TRUE(at::equal(first->x.narrow(1, 1, 3), first->y.narrow(1, 0, 3)));
    TokenRange r = tokenRange(s, 0, s.size());
    EXPECT_EQ(r.min, 3);
    EXPECT_EQ(r.max, 32);
  }
}

// Float targets of any trailing shape (regression), held in memory as float32.
TEST_F(DataTest, FloatTargetsKeepTheirShape) {
  std::string p = makeFile("r.h5", {{"train/features", {6, 3}, H5T_IEEE_F32LE}, {"train/labels", {6, 2}, H5T_IEEE_F64LE}});
  SourceSpec spec{{p}, "train", "features", "labels", 0};
  spec.targets = Targets::kValues;
  SplitSource s(spec);
  EXPECT_EQ(s.targetShape(), (std::vector<int64_t>{2}));
  Batch b = readBatch(s, {}, {1, 4, 5});
  ASSERT_EQ(b.y.scalar_type(), at::kFloat);
  EXPECT_EQ(b.y.sizes().vec(), (std::vector<int64_t>{3, 2}));
  EXPECT_FLOAT_EQ(b.y[2][1].item<float>(), 0.5f);
}

// A label layout that does not fit the task is named before anything is read.
TEST_F(DataTest, LabelsOfTheWrongKindForTheTaskAreNamed) {
  std::string f = makeFile("f.h5", {{"train/features", {4, 3}, H5T_IEEE_F32LE}, {"train/labels", {4}, H5T_IEEE_F32LE}});
  std::string i = makeFile("i.h5", {{"train/features", {4, 3}, H5T_IEEE_F32LE}, {"train/labels", {4}, H5T_STD_I64LE}});
  SourceSpec spec{{f}, "train", "features", "labels", 2};
  EXPECT_NE(errorOf(spec).find("task classification takes integer class labels, but these are float32"),
            std::string::npos);
  spec = SourceSpec{{i}, "train", "features", "labels", 0};
  spec.targets = Targets::kValues;
  spec.task = "regression";
  EXPECT_NE(errorOf(spec).find("task regression takes float targets (float32 or float64), but these are int64"),
            std::string::npos);
  spec.targets = Targets::kNextTokens;
  spec.task = "language_model";
  EXPECT_NE(errorOf(spec).find("task language_model reads token ids, but the features are float32"),
            std::string::npos);
  std::string nan = path("nan.h5");
  {
    H5Id file(H5Fcreate(nan.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    createGroup(file.get(), "train");
    std::vector<float> x(6, 1.0f), y = {1.0f, std::nanf("")};
    writeDataset(file.get(), "train/features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {2, 3}, 2, x.data());
    writeDataset(file.get(), "train/labels", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {2}, 2, y.data());
  }
  spec = SourceSpec{{nan}, "train", "features", "labels", 0};
  spec.targets = Targets::kValues;
  EXPECT_NE(errorOf(spec).find("target of sample 1 is not finite"), std::string::npos) << errorOf(spec);
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

}  // namespace
}  // namespace forge::data
