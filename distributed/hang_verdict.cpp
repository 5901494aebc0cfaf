#include "distributed/hang_verdict.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <optional>

#include "core/error.h"
#include "core/strings.h"
#include "core/table.h"

namespace forge::dist {
namespace {

std::string secs(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, s < 10 ? "%.1f s" : "%.0f s", s);
  return buf;
}

std::string collectiveText(uint8_t kind, uint64_t seq) {
  return concat(collectiveName(static_cast<CollectiveKind>(kind)), " #", seq);
}

std::string who(const RankRecord& r) { return concat("rank ", r.rank, " on ", r.host[0] ? r.host : "?"); }

std::string phaseText(const RankRecord& r) {
  const Phase p = static_cast<Phase>(r.phase);
  if (p == Phase::kBackward && r.bucket >= 0) return concat("backward (bucket ", r.bucket, " launched)");
  return phaseName(p);
}

// What a rank was doing with collectives, for the table and for a silent rank's sentence.
std::string collectiveState(const RankRecord& r, double age) {
  if (r.waitingSeq > 0) return concat("inside ", collectiveText(r.waitingKind, r.waitingSeq), " for ", secs(r.inFlightSeconds + age));
  if (r.completedSeq > 0) return concat("after completing ", collectiveText(r.completedKind, r.completedSeq));
  return "before its first collective";
}

// Seconds since the rank entered collective `seq` (as of now), if it is among its recent ones.
std::optional<double> enteredAge(const HeardRecord& h, uint64_t seq) {
  for (int i = 0; i < RankRecord::kRecent; ++i) {
    if (h.record.recentSeq[i] == seq) return h.record.recentAge[i] + h.ageSeconds;
  }
  return std::nullopt;
}

uint8_t enteredPhase(const HeardRecord& h, uint64_t seq) {
  for (int i = 0; i < RankRecord::kRecent; ++i) {
    if (h.record.recentSeq[i] == seq) return h.record.recentPhase[i];
  }
  return h.record.phase;
}

}  // namespace

HangVerdict judgeHang(const std::vector<HeardRecord>& records, double timeoutSeconds, double silentAfterSeconds,
                      const std::string& trigger) {
  HangVerdict v;
  // The collective the job is stuck in: the one a rank's deadline passed in (as it was
  // then: a late rank may have let it complete since); failing that, the oldest one that some
  // rank issued and saw no end of (by the fresh records: a silent rank's is from before it
  // went quiet).
  uint64_t stuckSeq = std::numeric_limits<uint64_t>::max();
  uint8_t stuckKind = 0;
  auto fresh = [&](const HeardRecord& h) { return h.heard && h.ageSeconds <= silentAfterSeconds; };
  for (const auto& h : records) {
    if (fresh(h) && h.record.timedOutSeq > 0 && h.record.timedOutSeq < stuckSeq) {
      stuckSeq = h.record.timedOutSeq;
      stuckKind = h.record.timedOutKind;
    }
  }
  for (const auto& h : records) {
    if (stuckSeq != std::numeric_limits<uint64_t>::max()) break;
    if (!fresh(h) || h.record.waitingSeq == 0) continue;
    if (h.record.waitingSeq < stuckSeq) {
      stuckSeq = h.record.waitingSeq;
      stuckKind = h.record.waitingKind;
    }
  }
  const bool known = stuckSeq != std::numeric_limits<uint64_t>::max();
  if (known) v.collective = collectiveText(stuckKind, stuckSeq);

  std::vector<std::string> sentences;
  // 1. Ranks that went quiet: their process is frozen or cut off, whatever they were doing.
  for (size_t r = 0; r < records.size(); ++r) {
    const auto& h = records[r];
    const std::string others = known ? concat(", while the others wait in ", v.collective) : std::string();
    if (!h.heard) {
      sentences.push_back(concat("rank ", r, " never reported: nothing heard from it since the start", others,
                                 " (it froze, died or is cut off before its first report)"));
      v.culprits.push_back(static_cast<int>(r));
    } else if (h.ageSeconds > silentAfterSeconds) {
      sentences.push_back(concat(who(h.record), " stopped responding: nothing heard from it for ", secs(h.ageSeconds),
                                 others, " (its last report: ", phaseText(h.record), " at step ",
                                 h.record.globalStep, ", ", collectiveState(h.record, 0), ")"));
      v.culprits.push_back(static_cast<int>(r));
    }
  }
  // 2. Ranks that are alive but never reached the collective the others wait in.
  if (known) {
    for (size_t r = 0; r < records.size(); ++r) {
      const auto& h = records[r];
      if (!fresh(h) || h.record.enteredSeq >= stuckSeq) continue;
      sentences.push_back(concat(who(h.record), " never entered ", v.collective, ": it has been in ",
                                 phaseText(h.record), " for ", secs(h.record.phaseSeconds + h.ageSeconds)));
      v.culprits.push_back(static_cast<int>(r));
    }
  }
  // 3. Ranks that did enter it, but so long after the first rank waiting in it that the
  //    deadline had passed (they arrived while the verdict was being made).
  if (known && sentences.empty()) {
    double firstWaiter = 0;
    for (const auto& h : records) {
      if (!fresh(h)) continue;
      if (auto age = enteredAge(h, stuckSeq)) firstWaiter = std::max(firstWaiter, *age);
      if (h.record.waitingSeq == stuckSeq) firstWaiter = std::max(firstWaiter, h.record.inFlightSeconds + h.ageSeconds);
      // A rank whose deadline passed in it waited at least that long.
      if (h.record.timedOutSeq == stuckSeq) firstWaiter = std::max(firstWaiter, timeoutSeconds);
    }
    for (size_t r = 0; r < records.size(); ++r) {
      const auto& h = records[r];
      if (!fresh(h) || h.record.timedOut) continue;
      auto age = enteredAge(h, stuckSeq);
      if (!age || firstWaiter - *age < timeoutSeconds / 2) continue;
      sentences.push_back(concat(who(h.record), " entered ", v.collective, " only ", secs(firstWaiter - *age),
                                 " after the first rank waiting in it, past the deadline: it was in ",
                                 phaseName(static_cast<Phase>(enteredPhase(h, stuckSeq))), " until then"));
      v.culprits.push_back(static_cast<int>(r));
    }
  }
  // 4. Everyone is in it: the transport.
  if (sentences.empty() && known) {
    std::vector<std::string> done, notDone;
    for (const auto& h : records) {
      (h.record.completedSeq >= stuckSeq ? done : notDone).push_back(std::to_string(h.record.rank));
    }
    if (done.empty()) {
      sentences.push_back(concat("all ", records.size(), " ranks entered ", v.collective,
                                 "; none completed: the transport is stuck"));
    } else {
      sentences.push_back(concat("all ", records.size(), " ranks entered ", v.collective, "; rank(s) ", join(done),
                                 " completed it, rank(s) ", join(notDone), " did not: the transport is stuck"));
    }
  }
  if (sentences.empty()) sentences.push_back(concat("no rank is inside a collective (", trigger, ")"));
  std::string all;
  for (const auto& s : sentences) all += (all.empty() ? "" : "; ") + s;
  v.verdict = all;

  Table t({"rank", "host", "phase", "for", "epoch", "step", "collectives", "heard"},
          {Table::Align::kRight, Table::Align::kLeft, Table::Align::kLeft, Table::Align::kRight, Table::Align::kRight,
           Table::Align::kRight, Table::Align::kLeft, Table::Align::kRight});
  std::string ranksJson;
  for (size_t r = 0; r < records.size(); ++r) {
    const auto& h = records[r];
    const RankRecord& x = h.record;
    if (!h.heard) {
      t.row({std::to_string(r), "?", "?", "", "", "", "never reported", "never"});
      ranksJson += concat(ranksJson.empty() ? "" : ",\n    ", "{\"rank\": ", r, ", \"heard\": false}");
      continue;
    }
    t.row({std::to_string(r), x.host, phaseText(x), secs(x.phaseSeconds + h.ageSeconds), std::to_string(x.epoch),
           std::to_string(x.globalStep), collectiveState(x, h.ageSeconds), secs(h.ageSeconds) + " ago"});
    ranksJson += concat(
        ranksJson.empty() ? "" : ",\n    ", "{\"rank\": ", r, ", \"host\": ", jsonQuote(x.host),
        ", \"phase\": ", jsonQuote(phaseName(static_cast<Phase>(x.phase))), ", \"phase_seconds\": ",
        jsonNumber(x.phaseSeconds + h.ageSeconds), ", \"bucket\": ", x.bucket, ", \"epoch\": ", x.epoch,
        ", \"global_step\": ", x.globalStep, ", \"entered\": {\"op\": ",
        jsonQuote(collectiveName(static_cast<CollectiveKind>(x.enteredKind))), ", \"seq\": ", x.enteredSeq,
        "}, \"completed\": {\"op\": ", jsonQuote(collectiveName(static_cast<CollectiveKind>(x.completedKind))),
        ", \"seq\": ", x.completedSeq, "}, \"waiting_seconds\": ",
        jsonNumber(x.waitingSeq > 0 ? x.inFlightSeconds + h.ageSeconds : 0.0), ", \"timed_out\": ",
        x.timedOut ? "true" : "false", ", \"heard\": true, \"heard_seconds_ago\": ", jsonNumber(h.ageSeconds), "}");
  }
  v.table = t.lines("  ");
  std::string culprits;
  for (int c : v.culprits) culprits += concat(culprits.empty() ? "" : ", ", c);
  v.json = concat("{\n  \"verdict\": ", jsonQuote(v.verdict), ",\n  \"culprits\": [", culprits,
                  "],\n  \"collective\": ",
                  known ? concat("{\"op\": ", jsonQuote(collectiveName(static_cast<CollectiveKind>(stuckKind))),
                                 ", \"seq\": ", stuckSeq, "}")
                        : std::string("null"),
                  ",\n  \"timeout_s\": ", jsonNumber(timeoutSeconds), ",\n  \"trigger\": ", jsonQuote(trigger),
                  ",\n  \"ranks\": [\n    ", ranksJson, "\n  ]\n}\n");
  return v;
}

}  // namespace forge::dist
