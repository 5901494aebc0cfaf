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

// perplexity and bits_per_token take the batch's mean loss when the run's loss is
// cross_entropy; under any other loss they compute the cross-entropy of the logits
// themselves. Both ways give the same values, over ranks of different batch sizes, and
// the other loss's own value does not leak into them.
TEST_F(MetricSumsOverRanks, PerplexityFromTheLossEqualsPerplexityFromTheLogits) {
  LossSpec doubled;
  doubled.name = "twice_cross_entropy";
  doubled.help = "another loss: perplexity must not follow from it";
  doubled.loss = [](const at::Tensor& out, const data::Batch& b) {
    return 2.0 * registry().losses.get("cross_entropy").loss(out, b);
  };
  if (!registry().losses.find(doubled.name)) registerLoss(doubled);
  torch::manual_seed(11 + rank());
  const int64_t n = 2 + rank(), t = 5, v = 7;
  data::Batch b{at::randn({n, t, v}), at::randint(v, {n, t}, at::kLong)};
  std::vector<std::vector<std::pair<std::string, double>>> results;
  for (const char* loss : {"cross_entropy", "twice_cross_entropy"}) {
    Task task = Task::resolve(loss, {"perplexity", "bits_per_token"});
    MetricSums sums(task, c10::kCPU);
    sums.add(task.lossOf(b.x, b), b.x, b);
    results.push_back(sums.global(comm_));
  }
  // The reference: every rank's summed cross-entropy over every rank's positions.
  at::Tensor ce = torch::nn::functional::cross_entropy(
      b.x.reshape({-1, v}), b.y.reshape({-1}), torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  at::Tensor totals = at::stack({ce.to(at::kDouble), at::scalar_tensor(double(b.y.numel()), at::kDouble)});
  comm_.allReduce(totals, dist::ReduceOp::kSum);
  const double nats = totals[0].item<double>() / totals[1].item<double>();
  for (const auto& r : results) {
    ASSERT_EQ(r.size(), 3u);
    EXPECT_NEAR(r[1].second, std::exp(nats), 1e-5 * std::exp(nats)) << "perplexity";
    EXPECT_NEAR(r[2].second, nats / std::log(2.0), 1e-5) << "bits_per_token";
  }
  EXPECT_NEAR(results[1][0].second, 2.0 * results[0][0].second, 1e-5) << "the other loss is its own value";
}

}  // namespace
}  // namespace forge::train
