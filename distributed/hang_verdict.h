// From every rank's record (distributed/rank_status.h), as the watchdog last heard it, to one
// sentence that says which rank held the job up, what it was doing and which collective the
// others waited in; then a line per rank and the same as JSON. A pure function, so that every
// kind of hang can be tested without making one.
#pragma once

#include <string>
#include <vector>

#include "distributed/rank_status.h"

namespace forge::dist {

struct HeardRecord {
  RankRecord record;
  bool heard = false;     // false: nothing ever arrived from this rank
  double ageSeconds = 0;  // since the record was taken (its times are then this much older)
};

struct HangVerdict {
  std::string verdict;             // one sentence
  std::vector<int> culprits;       // the ranks it names (empty: the transport)
  std::string collective;          // "allReduce #5521" the waiting ranks are in ("" if none)
  std::vector<std::string> table;  // a header and a line per rank
  std::string json;                // hang-report.json
};

// `records[r]` is rank r's. `silentAfterSeconds`: a record older than this means the rank
// stopped responding (its process is frozen, or the network to it is cut).
HangVerdict judgeHang(const std::vector<HeardRecord>& records, double timeoutSeconds, double silentAfterSeconds,
                      const std::string& trigger);

}  // namespace forge::dist
