// Data that is not what it claims, found instead of trained on: a file cut short, rewritten
// or replaced while it is open (on the copied and the mapped read path: an error naming the
// file, never zeros or a SIGBUS), and, when a file is opened, values HDF5 would silently
// make up (chunks never written, a declared extent the file cannot hold) or could not
// decode (a filter this library lacks).
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
#include "data/mapped_pages.h"
#include "data/source.h"
#include "tests/data/data_fixture.h"

namespace forge::data {
namespace {

namespace fs = std::filesystem;

// FORGE_NO_MAPPED_READS for the files a test opens while it lives.
class CopiedReads {
 public:
  CopiedReads() { ::setenv("FORGE_NO_MAPPED_READS", "1", 1); }
  ~CopiedReads() { ::unsetenv("FORGE_NO_MAPPED_READS"); }
};

class Integrity : public DataTest {
 protected:
  // 20,000 samples of 64 float32 features (5 MiB, several ~1 MiB chunks back to back: the
  // mapped path's layout).
  std::string bigFile(const std::string& name) {
    writeSynthetic({20000, 64, 4, 1}, path(name));
    return path(name);
  }
  static SourceSpec spec(const std::string& p) { return {{p}, "train", "features", "labels", 4}; }
  static std::string errorOfRead(const SplitSource& s, int64_t first, int64_t n) {
    std::vector<float> out(static_cast<size_t>(n * s.rowElements()));
    try {
      s.read(first, n, out.data());
    } catch (const DataError& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(Integrity, ACopiedReadOfAFileCutShortIsAnErrorNamingItNotZeros) {
  CopiedReads copied;
  const std::string p = bigFile("cut.h5");
  SplitSource s(spec(p));
  EXPECT_EQ(errorOfRead(s, 19000, 1000), "");
  ASSERT_EQ(::truncate(p.c_str(), static_cast<off_t>(fs::file_size(p) / 2)), 0);
  // HDF5 alone would hand back zeros for rows past the new end.
  std::string e = errorOfRead(s, 19000, 1000);
  EXPECT_NE(e.find("data file '" + p + "' changed during the run: cut short from"), std::string::npos) << e;
  EXPECT_NE(e.find("write new data to a new file"), std::string::npos) << e;
  // Rows still inside the file are refused as well: the file is no longer the one opened.
  e = errorOfRead(s, 0, 10);
  EXPECT_NE(e.find("cut short"), std::string::npos) << e;
}

TEST_F(Integrity, ACopiedReadOfAFileRewrittenInPlaceIsAnError) {
  CopiedReads copied;
  const std::string p = bigFile("rewritten.h5");
  SplitSource s(spec(p));
  {
    // Same size, other bytes in the middle (rows), a later modification time.
    FILE* f = std::fopen(p.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, static_cast<long>(fs::file_size(p) / 2), SEEK_SET);
    std::vector<char> junk(4096, 0x7f);
    std::fwrite(junk.data(), 1, junk.size(), f);
    std::fclose(f);
    timespec later[2] = {{0, UTIME_OMIT}, {::time(nullptr) + 5, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), later, 0), 0);
  }
  std::string e = errorOfRead(s, 0, 100);
  EXPECT_NE(e.find("data file '" + p + "' changed during the run: modified"), std::string::npos) << e;
}

TEST_F(Integrity, AMappedFileCutShortIsFoundBeforeItsRowsAreMapped) {
  const std::string p = bigFile("mapcut.h5");
  SplitSource s(spec(p));
  ASSERT_TRUE(s.map(0, 100)) << "the converters' layout is mapped";
  ASSERT_EQ(::truncate(p.c_str(), 4096), 0);
  try {
    s.map(19000, 100);
    ADD_FAILURE() << "a map of a file cut short must fail";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("data file '" + p + "' changed during the run: cut short"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(Integrity, PagesOfAMappedFileCutShortAreAReadThatFailsNotASigbus) {
  const std::string p = bigFile("pages.h5");
  SplitSource s(spec(p));
  MappedRows rows = s.map(10000, 5000);
  ASSERT_TRUE(rows);
  const auto* bytes = static_cast<const volatile char*>(rows.rows());
  char sum = 0;
  auto touch = [&] {
    for (size_t i = 0; i < 5000 * s.rowBytes(); i += 4096) sum += bytes[i];
  };
  EXPECT_TRUE(readMappedPages(touch));
  ASSERT_EQ(::truncate(p.c_str(), 4096), 0);
  EXPECT_FALSE(readMappedPages(touch)) << "the pages past the new end are gone";
  EXPECT_FALSE(readMappedPages(touch)) << "and a second fault on the same thread is caught as well";
}

TEST_F(Integrity, TheLoaderReportsAMappedFileCutShortUnderItAsADataError) {
  const std::string p = bigFile("loader.h5");
  SplitSource s(spec(p));
  LoaderOptions o;
  o.batchSize = 32;
  o.window = 1 << 16;  // one window: every row is mapped before the first batch is built
  BatchLoader loader(s, {}, o);
  std::vector<int64_t> order(s.size());
  std::iota(order.begin(), order.end(), 0);
  loader.start(order);
  ASSERT_TRUE(loader.next().has_value());
  ASSERT_EQ(::truncate(p.c_str(), 4096), 0);
  std::string error;
  try {
    while (loader.next()) {
    }
  } catch (const DataError& e) {
    error = e.what();
  }
  EXPECT_NE(error.find("data file '" + p + "' changed during the run: cut short"), std::string::npos) << error;
  EXPECT_NE(error.find("found reading sample"), std::string::npos) << error;
}

TEST_F(Integrity, ChangeOfNamesWhatChanged) {
  const std::string p = bigFile("watched.h5");
  SplitSource s(spec(p));
  EXPECT_EQ(s.changeOf(0), "");
  EXPECT_EQ(s.path(0), p);
  timespec later[2] = {{0, UTIME_OMIT}, {::time(nullptr) + 5, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), later, 0), 0);
  EXPECT_NE(s.changeOf(0).find("modified"), std::string::npos) << s.changeOf(0);

  const std::string q = bigFile("replaced.h5");
  SplitSource r(spec(q));
  writeSynthetic({20000, 64, 4, 2}, path("new.h5"));
  fs::rename(path("new.h5"), q);  // how converters (and most tools) replace a file
  EXPECT_NE(r.changeOf(0).find("replaced"), std::string::npos) << r.changeOf(0);
  // The open file is the old one, whose rows read as they were: only changeOf sees this.
  EXPECT_EQ(errorOfRead(r, 0, 10), "");
}

TEST_F(Integrity, AnOverwriteWithItsModificationTimeSetBackIsStillSeen) {
  // Same size, other bytes, and the modification time restored to the nanosecond (what
  // `touch -d` or a copy tool preserving times leaves): the status change time moved.
  const std::string p = bigFile("hidden.h5");
  SplitSource s(spec(p));
  struct stat before {};
  ASSERT_EQ(::stat(p.c_str(), &before), 0);
  {
    int fd = ::open(p.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const char byte = 0x5a;
    ASSERT_EQ(::pwrite(fd, &byte, 1, before.st_size - 10), 1);
    ::close(fd);
  }
  timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), times, 0), 0);
  EXPECT_NE(s.changeOf(0).find("status change time moved"), std::string::npos) << s.changeOf(0);
}

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
