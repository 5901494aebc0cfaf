// The verdict for each kind of hang, from records as the watchdog would hold them.
#include <gtest/gtest.h>

#include <cstring>

#include "distributed/hang_verdict.h"

namespace forge::dist {
namespace {

HeardRecord rec(int rank, Phase phase, uint64_t entered, uint64_t completed, double phaseS, double ageS = 0.1) {
  HeardRecord h;
  h.heard = true;
  h.ageSeconds = ageS;
  RankRecord& r = h.record;
  r.rank = rank;
  r.phase = static_cast<uint8_t>(phase);
  r.enteredSeq = entered;
  r.enteredKind = static_cast<uint8_t>(CollectiveKind::kAllReduce);
  r.completedSeq = completed;
  r.completedKind = static_cast<uint8_t>(CollectiveKind::kAllReduce);
  if (entered > completed) {
    r.waitingSeq = completed + 1;
    r.waitingKind = static_cast<uint8_t>(CollectiveKind::kAllReduce);
    r.inFlightSeconds = phaseS;
  }
  r.phaseSeconds = phaseS;
  r.globalStep = 40;
  std::snprintf(r.host, sizeof r.host, "node%d", rank);
  return h;
}

TEST(HangVerdict, NamesTheRankThatNeverEnteredAndItsPhase) {
  auto v = judgeHang({rec(0, Phase::kBetweenSteps, 12, 11, 300), rec(1, Phase::kEvaluation, 11, 11, 312),
                      rec(2, Phase::kBetweenSteps, 12, 11, 300)},
                     300, 4, "timeout");
  EXPECT_EQ(v.verdict, "rank 1 on node1 never entered allReduce #12: it has been in evaluation for 312 s");
  EXPECT_EQ(v.culprits, std::vector<int>{1});
  EXPECT_EQ(v.collective, "allReduce #12");
  ASSERT_EQ(v.table.size(), 5u);  // header, rule, 3 ranks
  EXPECT_NE(v.json.find("\"culprits\": [1]"), std::string::npos) << v.json;
  EXPECT_NE(v.json.find("\"collective\": {\"op\": \"allReduce\", \"seq\": 12}"), std::string::npos) << v.json;
}

TEST(HangVerdict, ARankThatArrivedPastTheDeadlineIsStillNamed) {
  // Rank 0's deadline passed in #12; rank 1 entered #12 from evaluation 0.3 s ago, #12
  // completed, and both have moved on.
  HeardRecord waiter = rec(0, Phase::kBetweenSteps, 13, 12, 0.2);
  waiter.record.timedOut = 1;
  waiter.record.timedOutSeq = 12;
  waiter.record.timedOutKind = static_cast<uint8_t>(CollectiveKind::kAllReduce);
  waiter.record.recentSeq[0] = 13;
  waiter.record.recentAge[0] = 0.2;
  waiter.record.recentSeq[1] = 12;
  waiter.record.recentAge[1] = 3.4;
  HeardRecord late = rec(1, Phase::kForward, 13, 12, 0.1, 0.0);
  late.record.recentSeq[0] = 13;
  late.record.recentAge[0] = 0.2;
  late.record.recentSeq[1] = 12;
  late.record.recentAge[1] = 0.3;
  late.record.recentPhase[1] = static_cast<uint8_t>(Phase::kEvaluation);
  auto v = judgeHang({waiter, late}, 3, 4, "timeout");
  EXPECT_EQ(v.culprits, std::vector<int>{1}) << v.verdict;
  EXPECT_EQ(v.verdict, "rank 1 on node1 entered allReduce #12 only 3.2 s after the first rank waiting in it, past the "
                       "deadline: it was in evaluation until then");
}

TEST(HangVerdict, AllInsideNoneCompletedIsTheTransport) {
  auto v = judgeHang({rec(0, Phase::kBackward, 9, 8, 301), rec(1, Phase::kBackward, 9, 8, 300)}, 300, 4, "timeout");
  EXPECT_EQ(v.verdict, "all 2 ranks entered allReduce #9; none completed: the transport is stuck");
  EXPECT_TRUE(v.culprits.empty());
}

TEST(HangVerdict, SomeCompletedSomeNot) {
  auto v = judgeHang({rec(0, Phase::kBackward, 9, 9, 301), rec(1, Phase::kBackward, 9, 8, 300)}, 300, 4, "timeout");
  EXPECT_NE(v.verdict.find("rank(s) 0 completed it, rank(s) 1 did not"), std::string::npos) << v.verdict;
}

TEST(HangVerdict, ASilentRankIsNamedWhateverItLastSaid) {
  // Rank 1's last report is 30 s old: it said it was in backward, inside #9 like rank 0.
  auto v = judgeHang({rec(0, Phase::kBackward, 9, 8, 31), rec(1, Phase::kBackward, 9, 8, 1, 30)}, 30, 4, "timeout");
  EXPECT_EQ(v.culprits, std::vector<int>{1});
  EXPECT_EQ(v.verdict.rfind("rank 1 on node1 stopped responding: nothing heard from it for 30 s, while the others "
                            "wait in allReduce #9",
                            0),
            0u)
      << v.verdict;
}

TEST(HangVerdict, ARankNeverHeardFrom) {
  std::vector<HeardRecord> records{rec(0, Phase::kForward, 3, 2, 10), HeardRecord{}};
  auto v = judgeHang(records, 10, 4, "timeout");
  EXPECT_EQ(v.culprits, std::vector<int>{1});
  EXPECT_NE(v.verdict.find("rank 1 never reported"), std::string::npos) << v.verdict;
  EXPECT_NE(v.json.find("{\"rank\": 1, \"heard\": false}"), std::string::npos) << v.json;
}

TEST(HangVerdict, NothingInFlightSaysSo) {
  auto v = judgeHang({rec(0, Phase::kForward, 3, 3, 10), rec(1, Phase::kForward, 3, 3, 10)}, 10, 4, "why");
  EXPECT_EQ(v.verdict, "no rank is inside a collective (why)");
  EXPECT_NE(v.json.find("\"collective\": null"), std::string::npos);
}

TEST(RankStatus, RecordsTheOldestCollectiveInFlight) {
  RankStatus s;
  s.entered(CollectiveKind::kAllReduce, 1);
  s.entered(CollectiveKind::kBroadcast, 2);
  s.completed(CollectiveKind::kAllReduce, 1);
  s.entered(CollectiveKind::kAllGather, 3);
  RankRecord r = s.snapshot();
  EXPECT_EQ(r.enteredSeq, 3u);
  EXPECT_EQ(r.completedSeq, 1u);
  EXPECT_EQ(r.waitingSeq, 2u);
  EXPECT_EQ(static_cast<CollectiveKind>(r.waitingKind), CollectiveKind::kBroadcast);
  s.completed(CollectiveKind::kBroadcast, 2);
  s.completed(CollectiveKind::kAllGather, 3);
  EXPECT_EQ(s.snapshot().waitingSeq, 0u);
  {
    PhaseScope eval(Phase::kEvaluation);
    EXPECT_EQ(s.phase(), Phase::kStartup);  // another record: the process's own is untouched
    EXPECT_EQ(rankStatus().phase(), Phase::kEvaluation);
  }
  EXPECT_NE(rankStatus().phase(), Phase::kEvaluation);
  try {
    PhaseScope eval(Phase::kEvaluation);
    throw std::runtime_error("timeout");
  } catch (const std::exception&) {
    // Left by an exception: the phase it was raised in stays, for the verdict.
    EXPECT_EQ(rankStatus().phase(), Phase::kEvaluation);
  }
}

}  // namespace
}  // namespace forge::dist
