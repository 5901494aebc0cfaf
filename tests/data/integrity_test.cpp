// Data that is not what it claims, found instead of trained on: when a file is opened,
// values HDF5 would silently make up (chunks never written, a declared extent the file
// cannot hold) or could not decode (a filter this library lacks).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <numeric>

#include "data/batch_loader.h"
#include "data/converters.h"
#include "data/hdf5_file.h"
#include "data/source.h"
#include "tests/data/data_fixture.h"

namespace forge::data {
namespace {

class Integrity : public DataTest {
 protected:
  static SourceSpec spec(const std::string& p) { return {{p}, "train", "features", "labels", 4}; }
};

// A chunked train/features of `dims` where only the first `written` chunks of `chunkRows`
// rows are written, with labels for every row; `fill`: give the features a fill value.
void writePartial(const std::string& p, std::vector<hsize_t> dims, hsize_t chunkRows, hsize_t written, bool fill,
                  hsize_t labelRows) {
  H5Id file(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  createGroup(file.get(), "train");
  H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
  std::vector<hsize_t> chunk = dims;
  chunk[0] = chunkRows;
  H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
  if (fill) {
    float value = 0.25f;
    H5Pset_fill_value(dcpl.get(), H5T_NATIVE_FLOAT, &value);
  }
  H5Id ds(H5Dcreate2(file.get(), "train/features", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
  hsize_t rowElements = 1;
  for (size_t d = 1; d < dims.size(); ++d) rowElements *= dims[d];
  std::vector<float> rows(written * chunkRows * rowElements, 1.0f);
  if (written > 0) writeRows(ds.get(), H5T_NATIVE_FLOAT, 0, written * chunkRows, rows.data());
  // Labels: chunked too, with a fill value of their own (so that only the features are at fault).
  H5Id lspace(H5Screate_simple(1, &labelRows, nullptr));
  H5Id lcpl(H5Pcreate(H5P_DATASET_CREATE));
  hsize_t lchunk = std::min<hsize_t>(labelRows, 1 << 16);
  H5Pset_chunk(lcpl.get(), 1, &lchunk);
  int64_t zero = 0;
  H5Pset_fill_value(lcpl.get(), H5T_NATIVE_INT64, &zero);
  H5Id lab(H5Dcreate2(file.get(), "train/labels", H5T_STD_I64LE, lspace.get(), H5P_DEFAULT, lcpl.get(), H5P_DEFAULT));
  ASSERT_TRUE(lab.valid());
}

TEST_F(Integrity, ChunksNeverWrittenAreRefusedUnlessTheDatasetChoseAFillValue) {
  writePartial(path("partial.h5"), {100, 4}, 10, 3, false, 100);
  std::string e = errorOf(spec(path("partial.h5")));
  EXPECT_NE(e.find("data file '" + path("partial.h5") + "', dataset 'train/features': 7 of its 10 chunks were "
                   "never written, and it has no fill value of its own"),
            std::string::npos)
      << e;
  writePartial(path("filled.h5"), {100, 4}, 10, 3, true, 100);
  SplitSource s(spec(path("filled.h5")));
  at::Tensor x = readAll(s).x;
  EXPECT_EQ(x[0][0].item<float>(), 1.0f);
  EXPECT_EQ(x[99][0].item<float>(), 0.25f) << "a fill value the dataset chose is data";
}

TEST_F(Integrity, AnExtentTheFileCannotHoldIsRefusedBeforeAnyAllocation) {
  // 10^12 rows declared, a few kilobytes stored.
  writePartial(path("huge.h5"), {1000000000000ull, 4}, 1000, 1, false, 1000000000000ull);
  std::string e = errorOf(spec(path("huge.h5")));
  EXPECT_NE(e.find("data file '" + path("huge.h5") + "', dataset 'train/features': it declares "
                   "1,000,000,000,000 rows"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("its header is corrupt, or the file was cut short"), std::string::npos) << e;
  // With fill values of their own such rows are legal HDF5; their labels alone would not fit
  // in memory, which is said before anything is allocated.
  writePartial(path("sparse.h5"), {1000000000000ull, 4}, 1000, 1, true, 1000000000000ull);
  e = errorOf(spec(path("sparse.h5")));
  EXPECT_NE(e.find("dataset 'train/labels': its 1,000,000,000,000 labels"), std::string::npos) << e;
  EXPECT_NE(e.find("do not fit in memory"), std::string::npos) << e;
}

TEST_F(Integrity, AContiguousDatasetNeverWrittenIsRefused) {
  {
    H5Id file(H5Fcreate(path("empty.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    createGroup(file.get(), "train");
    hsize_t dims[2] = {50, 4};
    H5Id space(H5Screate_simple(2, dims, nullptr));
    H5Id ds(H5Dcreate2(file.get(), "train/features", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                       H5P_DEFAULT));
    std::vector<int64_t> labels(50, 1);
    writeDataset(file.get(), "train/labels", H5T_STD_I64LE, H5T_NATIVE_INT64, {50}, 50, labels.data());
  }
  std::string e = errorOf(spec(path("empty.h5")));
  EXPECT_NE(e.find("dataset 'train/features': its values were never written"), std::string::npos) << e;
}

TEST_F(Integrity, AFilterThisLibraryLacksIsNamedWhenTheFileOpens) {
  {
    H5Id file(H5Fcreate(path("lzf.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    createGroup(file.get(), "train");
    hsize_t dims[2] = {50, 4}, chunk[2] = {10, 4};
    H5Id space(H5Screate_simple(2, dims, nullptr));
    H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
    H5Pset_chunk(dcpl.get(), 2, chunk);
    // 32000 is lzf's id. Optional: this library writes the chunks without it.
    ASSERT_GE(H5Pset_filter(dcpl.get(), 32000, H5Z_FLAG_OPTIONAL, 0, nullptr), 0);
    H5Id ds(H5Dcreate2(file.get(), "train/features", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, dcpl.get(),
                       H5P_DEFAULT));
    ASSERT_TRUE(ds.valid());
    std::vector<float> x(200, 1.0f);
    data::writeRows(ds.get(), H5T_NATIVE_FLOAT, 0, 50, x.data());
    std::vector<int64_t> labels(50, 1);
    writeDataset(file.get(), "train/labels", H5T_STD_I64LE, H5T_NATIVE_INT64, {50}, 50, labels.data());
  }
  std::string e = errorOf(spec(path("lzf.h5")));
  EXPECT_NE(e.find("dataset 'train/features': its chunks are stored through HDF5 filter"), std::string::npos) << e;
  EXPECT_NE(e.find("32000"), std::string::npos) << e;
  EXPECT_NE(e.find("cannot decode"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << "one line: " << e;
}

}  // namespace
}  // namespace forge::data
