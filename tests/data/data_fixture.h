// The data tests' shared fixture: a scratch folder and HDF5 files written to order.
#pragma once

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

}  // namespace forge::data
