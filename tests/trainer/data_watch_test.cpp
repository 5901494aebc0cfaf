// The epoch boundary's data check under mpirun -np 2: the ranks agree through one
// all-reduce, so a data file that changed where only one rank can see it (here: each rank
// reads a copy of its own) stops every rank with the same error at the same point, and
// nobody is left waiting in a collective.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <sys/stat.h>

#include <ctime>
#include <filesystem>

#include "core/error.h"
#include "data/converters.h"
#include "data/source.h"
#include "distributed/mpi/mpi_communicator.h"
#include "tests/temp_dir.h"
#include "trainer/engine/data_watch.h"

namespace forge::train {
namespace {

class DataWatchOverRanks : public ::testing::Test {
 protected:
  DataWatchOverRanks() : comm_(MPI_COMM_WORLD, std::chrono::seconds(60)) {
    file_ = dir_.file("data.h5");
    data::writeSynthetic({300, 8, 3, 4}, file_);
  }
  data::SourceSpec spec() const { return {{file_}, "train", "features", "labels", 3}; }
  // The message of the DataError requireUnchangedData throws on this rank, "" when none.
  std::string errorOf(const data::SplitSource& a, const data::SplitSource& b) {
    try {
      requireUnchangedData({&a, &b}, comm_);
    } catch (const DataError& e) {
      EXPECT_EQ(e.exitCode(), 2);
      return e.what();
    }
    return "";
  }
  dist::MpiCommunicator comm_;
  forge::testing::TempDir dir_{"data_watch"};  // one per rank (the folder names the pid)
  std::string file_;
};

TEST_F(DataWatchOverRanks, UnchangedFilesPassOnEveryRank) {
  data::SplitSource train(spec());
  data::SplitSource test({{file_}, "test", "features", "labels", 3});
  EXPECT_EQ(errorOf(train, test), "");
  EXPECT_EQ(errorOf(train, test), "") << "and again: the check changes nothing";
}

TEST_F(DataWatchOverRanks, AFileChangedOnOneRankStopsEveryRankNamingIt) {
  data::SplitSource train(spec());
  data::SplitSource test({{file_}, "test", "features", "labels", 3});
  const int last = comm_.size() - 1;
  if (comm_.rank() == last) {
    timespec later[2] = {{0, UTIME_OMIT}, {::time(nullptr) + 5, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, file_.c_str(), later, 0), 0);
  }
  const std::string e = errorOf(train, test);
  EXPECT_NE(e.find("data file '" + file_ + "' changed during the run"), std::string::npos) << e;
  if (comm_.rank() == last) {
    EXPECT_NE(e.find("modified"), std::string::npos) << e;
  } else {
    EXPECT_NE(e.find("as another rank found"), std::string::npos) << e;
  }
}

}  // namespace
}  // namespace forge::train
