#include "trainer/report/summary.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>

#include "checkpoint/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/table.h"

namespace forge::train {
namespace {

std::string valueText(double v, bool percent) {
  char buf[32];
  if (percent) {
    std::snprintf(buf, sizeof buf, "%.2f%%", 100.0 * v);
  } else {
    std::snprintf(buf, sizeof buf, "%.4f", v);
  }
  return buf;
}

nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

std::string ms(double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f ms", 1e3 * seconds);
  return buf;
}

}  // namespace

Straggler stragglerOf(const std::vector<RankTiming>& ranks) {
  Straggler s;
  if (ranks.size() < 2) return s;
  for (const auto& r : ranks) {
    if (r.steps == 0) return s;
  }
  const RankTiming* slowest = &ranks[0];
  double fastest = ranks[0].busy();
  for (const auto& r : ranks) {
    if (r.busy() > slowest->busy()) slowest = &r;
    fastest = std::min(fastest, r.busy());
  }
  double share = 0;
  for (const auto& r : ranks) {
    if (&r != slowest) share += r.commWait / std::max(1e-12, r.step);
  }
  s.known = true;
  s.slowest = *slowest;
  s.fastestBusy = fastest;
  s.othersWaitingShare = share / static_cast<double>(ranks.size() - 1);
  return s;
}

void logSessionSummary(const SessionSummary& s) {
  auto pct = [&](double part) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * part / std::max(1e-9, s.seconds));
    return std::string(buf);
  };
  Table t({"", ""});
  if (!std::isnan(s.bestMetric)) {
    t.row({"best " + s.monitored,
           concat(valueText(s.bestMetric, s.monitoredPercent),
                  s.bestEpoch > 0 ? concat(" after epoch ", s.bestEpoch) : std::string(" (an earlier session)"))});
  }
  std::string final;
  for (size_t i = 0; i < s.finalEval.size(); ++i) {
    const auto& [name, v] = s.finalEval[i];
    if (name == "loss") continue;
    final += concat(final.empty() ? "" : ", ", valueText(v, s.finalEvalPercent[i]), " ", name);
  }
  double loss = std::nan("");
  for (const auto& [name, v] : s.finalEval) {
    if (name == "loss") loss = v;
  }
  t.row({"final " + s.evalSplit, concat(final, final.empty() ? "" : ", ", "loss ", valueText(loss, false), " (",
                                        withThousands(s.finalEvalSamples), " samples)")});
  t.row({"time", concat(formatDuration(s.seconds), " this session (", s.epochsThisSession, " epoch(s) trained)")});
  if (s.epochsThisSession > 0) {
    t.row({"throughput", concat(withThousands(std::llround(s.samplesPerS)), " samples/s on average, ", s.worldSize,
                                " rank(s)")});
  }
  t.row({"time shares", concat("compute ", pct(s.compute), ", communication ", pct(s.comm), ", data wait ",
                               pct(s.dataWait), ", checkpoint ", pct(s.checkpoint), ", evaluation ", pct(s.evaluation),
                               ", setup and other ", pct(s.other))});
  if (Straggler st = stragglerOf(s.ranks); st.known) {
    char share[32];
    std::snprintf(share, sizeof share, "%.0f%%", 100 * st.othersWaitingShare);
    if (st.slowest.busy() > 1.1 * st.fastestBusy) {
      t.row({"slowest rank", concat("rank ", st.slowest.rank, " on ", st.slowest.host, ": busy ",
                                    ms(st.slowest.busy()), " per step (the least busy rank ", ms(st.fastestBusy),
                                    "); the other ranks spend ", share, " of their step time waiting in collectives")});
    } else {
      t.row({"ranks", concat("balanced: busy ", ms(st.fastestBusy), " to ", ms(st.slowest.busy()),
                             " per step; they spend ", share, " of their step time waiting in collectives")});
    }
    if (s.ranks.size() <= 16) {
      for (const auto& r : s.ranks) {
        t.row({concat("  rank ", r.rank), concat(ms(r.step), " per step: ", ms(r.busy()), " busy (data wait ",
                                                 ms(r.dataWait), "), ", ms(r.commWait), " waiting in collectives; ",
                                                 ms(r.cpu), " CPU, ",
                                                 withThousands(static_cast<long long>(r.pageFaults + 0.5)),
                                                 " page faults")});
      }
    }
  }
  log::info("train", "summary:");
  for (const auto& l : t.lines("    ")) log::info("train", l);
}

void writeSummaryJson(const std::string& path, const SessionSummary& s) {
  nlohmann::ordered_json j;
  j["epochs"] = s.epochs;
  j["global_step"] = s.globalStep;
  j["best_metric_name"] = s.monitored;
  j["best_metric"] = number(s.bestMetric);
  // null: the best epoch was trained in an earlier session, which did not record it here
  j["best_epoch"] = s.bestEpoch > 0 ? nlohmann::json(s.bestEpoch) : nlohmann::json(nullptr);
  for (const auto& [name, v] : s.finalEval) j["final_eval_" + name] = number(v);
  j["fingerprint"] = s.fingerprint;
  j["world_size"] = s.worldSize;
  j["session_seconds"] = number(s.seconds);
  j["session_epochs"] = s.epochsThisSession;
  j["samples_per_s"] = number(s.samplesPerS);
  j["seconds"] = {{"compute", number(s.compute)},       {"communication", number(s.comm)},
                  {"data_wait", number(s.dataWait)},    {"checkpoint", number(s.checkpoint)},
                  {"evaluation", number(s.evaluation)}, {"other", number(s.other)}};
  nlohmann::ordered_json ranks = nlohmann::json::array();
  for (const auto& r : s.ranks) {
    ranks.push_back({{"rank", r.rank},
                     {"host", r.host},
                     {"steps", r.steps},
                     {"step_seconds", number(r.step)},
                     {"busy_seconds", number(r.busy())},
                     {"data_wait_seconds", number(r.dataWait)},
                     {"comm_wait_seconds", number(r.commWait)},
                     {"cpu_seconds_per_step", number(r.cpu)},
                     {"minor_page_faults_per_step", number(r.pageFaults)}});
  }
  j["ranks"] = ranks;
  if (Straggler st = stragglerOf(s.ranks); st.known) {
    j["slowest_rank"] = {{"rank", st.slowest.rank},
                         {"host", st.slowest.host},
                         {"busy_seconds", number(st.slowest.busy())},
                         {"least_busy_seconds", number(st.fastestBusy)},
                         {"others_waiting_share", number(st.othersWaitingShare)}};
  }
  const std::string text = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  try {
    ckpt::writeFileAtomically(path, std::vector<char>(text.begin(), text.end()));
  } catch (const CheckpointError& e) {
    log::warn("train", e.what(), ": no summary.json this time");
  }
}

}  // namespace forge::train
