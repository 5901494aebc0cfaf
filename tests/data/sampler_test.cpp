// The epoch's global order is the same on any world size, and a position in it (a count of
// global samples) continues on another world size at exactly the next unseen sample.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "data/batch_loader.h"
#include "data/sampler.h"

namespace forge::data {
namespace {

std::vector<Block> blocksOf(int64_t n, int64_t rows) {
  std::vector<Block> blocks;
  for (int64_t r = 0; r < n; r += rows) blocks.push_back({0, r, std::min<int64_t>(rows, n - r), r});
  return blocks;
}

// The global batches (as sets) and the per-rank micro-batches of an epoch of n samples run
// on `worlds[i]` ranks from global sample `starts[i]` on (the last segment to the end).
struct EpochRun {
  std::vector<std::multiset<int64_t>> steps;  // the samples of each optimizer step
  std::map<int64_t, int> seen;
};

EpochRun runSegments(const std::vector<Block>& blocks, int64_t micro, int64_t globalBatch,
                const std::vector<std::pair<int, int64_t>>& segments, bool dropLast, int64_t window) {
  EpochRun out;
  for (size_t s = 0; s < segments.size(); ++s) {
    const auto [world, start] = segments[s];
    const int64_t end = s + 1 < segments.size() ? segments[s + 1].second : INT64_MAX;
    std::vector<DistributedSampler::Plan> plans;
    // As trainer/engine/global_batch.h splits it: one micro-batch of the rank's share when
    // it is at most `micro`, else micro-batches of `micro`.
    const int64_t share = globalBatch / world;
    const int64_t m = share <= micro ? share : micro;
    for (int r = 0; r < world; ++r) {
      DistributedSampler sampler(blocks, r, world, 11, true, dropLast, window, m, globalBatch);
      sampler.setEpoch(4);
      plans.push_back(sampler.plan(start));
      EXPECT_EQ(plans.back().indices.size(), plans.front().indices.size()) << "every rank gets as many";
      EXPECT_EQ(plans.back().microBatches, plans.front().microBatches) << "every rank runs as many micro-batches";
    }
    const int64_t q = globalBatch / world;
    for (int64_t k = 0; k < plans[0].steps && start + k * globalBatch < end; ++k) {
      std::multiset<int64_t> step;
      for (int r = 0; r < world; ++r) {
        const auto& idx = plans[r].indices;
        for (int64_t i = k * q; i < std::min<int64_t>((k + 1) * q, idx.size()); ++i) {
          step.insert(idx[i]);
          out.seen[idx[i]]++;
        }
      }
      out.steps.push_back(step);
    }
  }
  return out;
}

TEST(GlobalSampler, TheGlobalOrderDoesNotDependOnTheWorldSize) {
  auto blocks = blocksOf(1000, 37);
  std::vector<int64_t> first;
  for (int world : {1, 2, 3, 4}) {
    DistributedSampler s(blocks, 0, world, 3, true, false, 100, 5, 60);
    s.setEpoch(2);
    if (first.empty()) first = s.globalOrder();
    EXPECT_EQ(s.globalOrder(), first) << "world " << world;
  }
  std::vector<int64_t> sorted = first;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  DistributedSampler other(blocks, 0, 1, 3, true, false, 100);
  other.setEpoch(3);
  EXPECT_NE(other.globalOrder(), first) << "another epoch, another order";
}

TEST(GlobalSampler, AStepSplitsTheNextGlobalBatchAmongTheRanks) {
  auto blocks = blocksOf(1000, 37);
  DistributedSampler one(blocks, 0, 1, 3, true, false, 100, 60, 60);
  const std::vector<int64_t> global = one.globalOrder();
  for (int world : {2, 3, 4}) {
    for (int r = 0; r < world; ++r) {
      DistributedSampler s(blocks, r, world, 3, true, false, 100, 60 / world, 60);
      auto plan = s.plan();
      const int64_t q = 60 / world;
      for (int64_t k = 0; k < 16; ++k) {  // full steps: 16 of 60
        for (int64_t i = 0; i < q; ++i) ASSERT_EQ(plan.indices[k * q + i], global[k * 60 + r * q + i]);
      }
    }
  }
}

// Interrupted and continued on other world sizes, anywhere (between steps of the first
// world size's, which need not be steps of the next one's), every sample of the epoch is
// used once, and with the same global batch the steps are the same sets as uninterrupted.
TEST(GlobalSampler, ResumingOnOtherWorldSizesSeesEverySampleOnce) {
  for (int64_t n : {1000, 1001, 997}) {
    auto blocks = blocksOf(n, 37);
    const EpochRun whole = runSegments(blocks, 6, 12, {{2, 0}}, false, 100);
    for (const auto& segments : std::vector<std::vector<std::pair<int, int64_t>>>{
             {{2, 0}, {3, 240}, {2, 600}}, {{4, 0}, {1, 360}}, {{1, 0}, {3, 12}, {4, 996 / 12 * 12}}}) {
      // Micro-batches: 12 / world per rank (at most 6, else two of 6).
      const EpochRun run = runSegments(blocks, 6, 12, segments, false, 100);
      // The same global batches as on 2 ranks uninterrupted; the last one's padding is to
      // the last world size, so it is the same set of distinct samples.
      ASSERT_EQ(run.steps.size(), whole.steps.size());
      for (size_t k = 0; k + 1 < run.steps.size(); ++k) EXPECT_EQ(run.steps[k], whole.steps[k]) << "step " << k;
      auto real = [](const EpochRun& e) {  // the last step's samples without its padding
        std::set<int64_t> earlier, last;
        for (size_t k = 0; k + 1 < e.steps.size(); ++k) earlier.insert(e.steps[k].begin(), e.steps[k].end());
        for (int64_t i : e.steps.back()) {
          if (!earlier.count(i)) last.insert(i);
        }
        return last;
      };
      EXPECT_EQ(real(run), real(whole));
      int64_t padding = 0;
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_GE(run.seen.count(i), 1u) << "sample " << i << " of " << n << " never seen";
        padding += run.seen.at(i) - 1;
      }
      EXPECT_EQ(static_cast<int64_t>(run.seen.size()), n);
      const int lastWorld = segments.back().first;
      EXPECT_EQ(padding, (lastWorld - n % 12 % lastWorld) % lastWorld) << "padding: the last batch to the world size";
    }
    // Without a global batch that stays: 2 ranks of 6, then 3 ranks of 6 from a sample that is
    // no step boundary of theirs (228 = 19 steps of 12, not of 18).
    const EpochRun changed = runSegments(blocks, 6, 12, {{2, 0}}, false, 100);
    DistributedSampler three(blocks, 0, 3, 11, true, false, 100, 6, 18);
    EXPECT_EQ(three.stepsFrom(228), (n - 228 + 17) / 18);
    std::map<int64_t, int> seen;
    for (size_t k = 0; k < 19; ++k) {
      for (int64_t i : changed.steps[k]) seen[i]++;
    }
    for (int r = 0; r < 3; ++r) {
      DistributedSampler s(blocks, r, 3, 11, true, false, 100, 6, 18);
      s.setEpoch(4);
      for (int64_t i : s.plan(228).indices) seen[i]++;
    }
    int64_t extra = 0;
    for (auto& [i, c] : seen) extra += c - 1;
    EXPECT_EQ(static_cast<int64_t>(seen.size()), n);
    EXPECT_EQ(extra, (3 - (n - 228) % 18 % 3) % 3);
  }
}

TEST(GlobalSampler, DropLastLeavesOutThePartialGlobalBatchOnly) {
  auto blocks = blocksOf(1001, 37);
  const EpochRun run = runSegments(blocks, 6, 12, {{3, 0}, {2, 480}}, true, 64);
  EXPECT_EQ(run.steps.size(), 1001u / 12);
  EXPECT_EQ(run.seen.size(), 1001u / 12 * 12);
  for (auto& [i, c] : run.seen) EXPECT_EQ(c, 1);
}

TEST(GlobalSampler, ReadWindowsStartAtMicroBatchBoundariesWhereGlobalWindowsBegin) {
  auto blocks = blocksOf(1000, 37);
  for (int world : {1, 2, 3}) {
    DistributedSampler s(blocks, world - 1, world, 3, true, false, 128, 4, 12 * world);
    auto plan = s.plan(36 * world);
    ASSERT_FALSE(plan.windowStarts.empty());
    EXPECT_EQ(plan.windowStarts.front(), 0);
    for (size_t i = 1; i < plan.windowStarts.size(); ++i) {
      EXPECT_EQ(plan.windowStarts[i] % 4, 0);
      EXPECT_GT(plan.windowStarts[i], plan.windowStarts[i - 1]);
    }
    EXPECT_LT(plan.windowStarts.back(), static_cast<int64_t>(plan.indices.size()));
    // One read window per global window the rest of the epoch touches.
    EXPECT_NEAR(static_cast<double>(plan.windowStarts.size()), (1000.0 - 36 * world) / 128, 1.5) << world;
  }
}

}  // namespace
}  // namespace forge::data
