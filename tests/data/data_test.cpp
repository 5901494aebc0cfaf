#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/error.h"
#include "tests/temp_dir.h"
#include "data/batch_loader.h"
#include "data/converters.h"
#include "data/dataset.h"
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

  std::string errorOf(const SplitSpec& spec) {
    try {
      loadSplit(spec);
    } catch (const DataError& e) {
      EXPECT_EQ(e.exitCode(), 2);
      return e.what();
    }
    return "";
  }

  testing::TempDir dir_{"data_test"};
};

TEST_F(DataTest, SyntheticFilesHaveTheDocumentedLayoutAndLoad) {
  writeSynthetic({200, 12, 3, 7}, path("s.h5"));
  SplitData train = loadSplit({path("s.h5"), "train", "features", "labels", 3});
  SplitData test = loadSplit({path("s.h5"), "test", "features", "labels", 3});
  EXPECT_EQ(train.features.sizes(), (std::vector<int64_t>{200, 12}));
  EXPECT_EQ(train.features.scalar_type(), at::kFloat);
  EXPECT_EQ(train.labels.scalar_type(), at::kLong);
  EXPECT_EQ(test.size(), 40);
  EXPECT_GE(train.labels.min().item<int64_t>(), 0);
  EXPECT_LT(train.labels.max().item<int64_t>(), 3);
  // Same seed, same bytes.
  writeSynthetic({200, 12, 3, 7}, path("t.h5"));
  EXPECT_TRUE(at::equal(loadSplit({path("t.h5"), "train", "features", "labels", 3}).features, train.features));
}

TEST_F(DataTest, MissingFileNamesItAndHowToCreateIt) {
  std::string e = errorOf({path("nope.h5"), "train", "features", "labels", 10});
  EXPECT_NE(e.find("cannot open data file '" + path("nope.h5") + "'"), std::string::npos) << e;
  EXPECT_NE(e.find("forge data fashion-mnist"), std::string::npos) << e;
}

TEST_F(DataTest, AFileThatIsNotHdf5IsNamed) {
  { std::ofstream(path("junk.h5")) << "not hdf5"; }
  std::string e = errorOf({path("junk.h5"), "train", "features", "labels", 10});
  EXPECT_NE(e.find("not a readable HDF5 file"), std::string::npos) << e;
}

TEST_F(DataTest, MissingSplitAndMissingDatasetAreNamed) {
  std::string p = makeFile("m.h5", {{"train/features", {8, 4}, H5T_IEEE_F32LE}});
  EXPECT_NE(errorOf({p, "test", "features", "labels", 2}).find("has no split group 'test'"), std::string::npos);
  std::string e = errorOf({p, "train", "features", "labels", 2});
  EXPECT_NE(e.find("data file '" + p + "' has no dataset 'train/labels'"), std::string::npos) << e;
}

TEST_F(DataTest, CountsThatDifferAreReportedWithBothNumbers) {
  std::string p = makeFile("c.h5", {{"train/features", {8, 4}, H5T_IEEE_F32LE}, {"train/labels", {7}, H5T_STD_I64LE}});
  std::string e = errorOf({p, "train", "features", "labels", 2});
  EXPECT_NE(e.find("'train/features' has 8 samples but 'train/labels' has 7"), std::string::npos) << e;
}

TEST_F(DataTest, LabelsOutOfRangeNameTheIndexAndTheClassCount) {
  std::string p = makeFile("l.h5", {{"train/features", {5, 4}, H5T_IEEE_F32LE}, {"train/labels", {5}, H5T_STD_I32LE}},
                           /*labelValue=*/12);
  std::string e = errorOf({p, "train", "features", "labels", 10});
  EXPECT_NE(e.find("label 12 at index 0 is outside [0, 10)"), std::string::npos) << e;
  EXPECT_NE(e.find("dataset 'train/labels'"), std::string::npos) << e;
}

TEST_F(DataTest, EmptySplitIsAnError) {
  std::string p = makeFile("e.h5", {{"train/features", {0, 4}, H5T_IEEE_F32LE}, {"train/labels", {0}, H5T_STD_I64LE}});
  EXPECT_NE(errorOf({p, "train", "features", "labels", 2}).find("split 'train' is empty"), std::string::npos);
}

TEST_F(DataTest, UnsupportedFeatureTypeSaysWhatIsSupported) {
  std::string p = makeFile("t.h5", {{"train/features", {5, 4}, H5T_STD_I16LE}, {"train/labels", {5}, H5T_STD_I64LE}});
  std::string e = errorOf({p, "train", "features", "labels", 2});
  EXPECT_NE(e.find("unsupported feature type int16 (use uint8, float32 or float64)"), std::string::npos) << e;
}

TEST(Sampler, EverySampleIsSeenExactlyOncePerEpochUpToDocumentedPadding) {
  for (int world = 1; world <= 4; ++world) {
    for (int64_t n : {1000, 1001, 7}) {
      if (n < world) continue;
      std::map<int64_t, int> seen;
      int64_t perRank = -1;
      for (int r = 0; r < world; ++r) {
        DistributedSampler s(n, r, world, 3, true, false);
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
  std::set<int64_t> seen;
  for (int r = 0; r < 3; ++r) {
    DistributedSampler s(1001, r, 3, 0, true, true);
    for (auto i : s.indices()) EXPECT_TRUE(seen.insert(i).second);
  }
  EXPECT_EQ(seen.size(), 999u);
}

TEST(Sampler, OrderIsAFunctionOfSeedAndEpoch) {
  DistributedSampler a(500, 1, 2, 42, true, false), b(500, 1, 2, 42, true, false), c(500, 1, 2, 43, true, false);
  a.setEpoch(3);
  b.setEpoch(3);
  c.setEpoch(3);
  EXPECT_EQ(a.indices(), b.indices());
  EXPECT_NE(a.indices(), c.indices());
  b.setEpoch(4);
  EXPECT_NE(a.indices(), b.indices());
}

TEST(Loader, DeliversEveryBatchInOrderWithNormalization) {
  SplitData d;
  d.features = at::arange(20, at::kByte).reshape({10, 2});
  d.labels = at::arange(10, at::kLong);
  BatchLoader loader(d, Normalization{0.5, 1.0, 2.0}, 4, false, 2);
  std::vector<int64_t> order = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
  for (int epoch = 0; epoch < 2; ++epoch) {
    loader.start(order);
    std::vector<int64_t> labels;
    int batches = 0;
    while (auto b = loader.next()) {
      ++batches;
      EXPECT_EQ(b->x.scalar_type(), at::kFloat);
      for (int64_t i = 0; i < b->y.size(0); ++i) {
        int64_t id = b->y[i].item<int64_t>();
        labels.push_back(id);
        // x = (raw * 0.5 - 1) / 2 with raw = 2 * id
        EXPECT_FLOAT_EQ(b->x[i][0].item<float>(), (2.0f * id * 0.5f - 1.0f) / 2.0f);
      }
    }
    EXPECT_EQ(batches, 3);
    EXPECT_EQ(labels, order);
  }
  EXPECT_EQ(loader.batchesPerEpoch(10), 3);
  BatchLoader dropping(d, {}, 4, true, 2);
  EXPECT_EQ(dropping.batchesPerEpoch(10), 2);
}

}  // namespace
}  // namespace forge::data
