// The task's loss and metrics summed over ranks (run under mpirun -np 2 and 3): values are
// closed-form functions of the rank and world size, a rank without batches takes part, and
// a metric whose sums differ in length between ranks is the same named error on every rank
// instead of a mismatched all-reduce.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include "core/error.h"
#include "distributed/mpi/mpi_communicator.h"
#include "trainer/engine/metric_sums.h"
#include "trainer/spec/registry.h"

namespace forge::train {
namespace {

class MetricSumsOverRanks : public ::testing::Test {
 protected:
  MetricSumsOverRanks() : comm_(MPI_COMM_WORLD, std::chrono::seconds(60)) {}
  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  // A batch of `n` samples whose logits pick class 0, labels `label`.
  static data::Batch batch(int64_t n, int64_t label) {
    at::Tensor out = at::zeros({n, 3});
    out.select(1, 0).fill_(5.0);
    return {out, at::full({n}, label, at::kLong)};
  }
  dist::MpiCommunicator comm_;
};

TEST_F(MetricSumsOverRanks, LossAndAccuracyAreWeightedBySamplesOverAllRanks) {
  Task task = Task::resolve("cross_entropy", {"accuracy"});
  MetricSums sums(task, c10::kCPU);
  // Rank r sees r + 1 samples, all right when r is even (label 0), all wrong when odd.
  data::Batch b = batch(rank() + 1, rank() % 2 == 0 ? 0 : 1);
  sums.add(task.lossOf(b.x, b), b.x, b);
  auto values = sums.global(comm_);
  double samples = 0, right = 0;
  for (int r = 0; r < size(); ++r) {
    samples += r + 1;
    if (r % 2 == 0) right += r + 1;
  }
  EXPECT_EQ(sums.globalSamples(), samples);
  ASSERT_EQ(values.size(), 2u);
  EXPECT_EQ(values[1].first, "accuracy");
  EXPECT_NEAR(values[1].second, right / samples, 1e-12);
  EXPECT_GT(values[0].second, 0.0);
}

TEST_F(MetricSumsOverRanks, ARankWithoutBatchesTakesPart) {
  Task task = Task::resolve("cross_entropy", {"accuracy"});
  MetricSums sums(task, c10::kCPU);
  if (rank() != 0) {
    data::Batch b = batch(4, 0);
    sums.add(task.lossOf(b.x, b), b.x, b);
  }
  auto values = sums.global(comm_);
  EXPECT_EQ(sums.globalSamples(), 4.0 * (size() - 1));
  EXPECT_DOUBLE_EQ(values[1].second, 1.0);
}

TEST_F(MetricSumsOverRanks, SumsOfAnotherLengthOnAnotherRankAreOneNamedErrorOnEveryRank) {
  MetricSpec odd;
  odd.name = "length_by_rank";
  odd.help = "a broken metric: one sum more on every rank";
  const int r = rank();
  odd.sums = [r](const at::Tensor& out, const data::Batch&) { return at::zeros({1 + r}, at::kDouble); };
  if (!registry().metrics.find(odd.name)) registerMetric(odd);
  Task task = Task::resolve("cross_entropy", {"length_by_rank"});
  MetricSums sums(task, c10::kCPU);
  data::Batch b = batch(2, 0);
  sums.add(task.lossOf(b.x, b), b.x, b);
  try {
    sums.global(comm_);
    FAIL() << "no error on rank " << rank();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metric length_by_rank returned 1 sum(s) per batch on one rank and " +
                                         std::to_string(size()) + " on another"),
              std::string::npos)
        << e.what();
  }
  comm_.barrier();  // every rank got here: nobody was left in a collective
}

}  // namespace
}  // namespace forge::train
