// forge doctor: a preflight run with the job's own launcher and node count. Every rank's
// host, device and threads; what the links between hosts deliver; an all-reduce of one
// gradient bucket through forge beside raw MPI; whether every rank runs the same build.
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>

#include <ATen/Parallel.h>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/table.h"
#include "distributed/link_probe.h"
#include "trainer/app/commands.h"

namespace forge::train {
namespace {

const char* kDoctorHelp = R"(usage: forge doctor [CONFIG.yaml] [--set key=value ...] [--seconds S]

Run it as the job will run: `mpirun -np N [--hostfile H] forge doctor CONFIG.yaml`,
`srun --mpi=pmix forge doctor CONFIG.yaml`, on the same nodes. It prints
  - each rank: host, local rank, device, intra-op threads (and where that number came from);
  - for each pair of hosts (and within each host with 2+ ranks): the link's latency and
    bandwidth, measured by a ping-pong between one rank on each;
  - an all-reduce of one gradient bucket (distributed.bucket_cap_mb) through forge's
    communicator beside a raw MPI_Allreduce of the same size;
  - whether every rank runs the same forge and LibTorch (and read the same config).
Without a config it checks the defaults (device auto, backend auto). --seconds bounds each
measurement (default 1; less per pair when there are many hosts, so the whole stays
within about half a minute). Exit 0 when everything agrees; 2 with the cause when a rank runs
another build or config, or has no device the config asks for.
)";

constexpr int64_t kRow = 192;  // bytes per rank in the gathered description

std::string rateText(double gbPerS) { return concat(fixed(gbPerS, gbPerS < 1 ? 3 : 2), " GB/s"); }

// This rank's line, gathered to every rank: host|local|device|threads|source.
std::vector<std::vector<std::string>> gatherRanks(dist::ProcessGroup& pg, const dist::ThreadChoice& threads) {
  char host[64] = {0};
  gethostname(host, sizeof host - 1);
  std::string mine = concat(host, "|", pg.world().localRank, "|", pg.device().str(), "|", at::get_num_threads(), "|",
                            threads.source);
  at::Tensor in = at::zeros({kRow}, at::kByte);
  std::memcpy(in.data_ptr(), mine.data(), std::min<size_t>(mine.size(), kRow - 1));
  at::Tensor all = at::zeros({kRow * pg.world().size}, at::kByte);
  pg.mpi().allGather(in, all);
  std::vector<std::vector<std::string>> rows;
  for (int r = 0; r < pg.world().size; ++r) {
    std::string row(static_cast<const char*>(all.data_ptr()) + r * kRow);
    rows.push_back(split(row, '|'));
  }
  return rows;
}

}  // namespace

int cmdDoctor(int argc, char** argv) {
  Args a = parseArgs(argc, argv, 2, {"set", "seconds"}, {}, kDoctorHelp);
  if (a.help) return std::cout << kDoctorHelp, 0;
  if (a.positional.size() > 1) usage("forge doctor takes at most one CONFIG.yaml", kDoctorHelp);
  if (a.positional.empty() && !a.all("set").empty()) usage("forge doctor: --set needs a CONFIG.yaml", kDoctorHelp);
  Config cfg;
  if (!a.positional.empty()) cfg = loadConfig(a.positional[0], a.all("set"));
  double seconds = 1;  // per measurement
  if (a.has("seconds")) {
    seconds = parseDouble(a.one("seconds"), "seconds");
    if (!(seconds > 0 && seconds <= 60)) usage("--seconds must be in (0, 60]", kDoctorHelp);
  }
  const auto started = std::chrono::steady_clock::now();
  auto pg = processGroupFor(&argc, &argv, cfg, "doctor");
  const dist::WorldInfo& w = pg->world();
  const bool lead = w.rank == 0;
  return runGuarded(*pg, [&] {
    agreeOnConfig(*pg, a.positional.empty() ? nullptr : &cfg);
    auto rows = gatherRanks(*pg, pg->threads());
    if (lead) {
      using A = Table::Align;
      Table t({"rank", "host", "local", "device", "threads", "threads from"}, {A::kRight, A::kLeft, A::kRight});
      for (int r = 0; r < w.size; ++r) {
        auto& c = rows[r];
        c.resize(5);
        t.row({std::to_string(r), c[0], c[1], c[2], c[3], c[4]});
      }
      std::cout << "[doctor] " << w.size << " rank(s) on " << w.nodes << " host(s):\n" << t.str("  ");
    }
    // One ping-pong per pair of hosts (their first ranks), and within each host that has 2+.
    std::map<std::string, std::vector<int>> byHost;
    std::vector<std::string> hostOrder;
    for (int r = 0; r < w.size; ++r) {
      if (byHost[rows[r][0]].empty()) hostOrder.push_back(rows[r][0]);
      byHost[rows[r][0]].push_back(r);
    }
    // One bucket, at most 256 MiB: the probe holds a few buffers of it on every rank.
    constexpr double kMostMb = 256;
    const bool capped = cfg.distributed.bucketCapMb > kMostMb;
    const int64_t bucket =
        std::max<int64_t>(4, static_cast<int64_t>(std::min(cfg.distributed.bucketCapMb, kMostMb) * 1048576) / 4 * 4);
    if (lead && capped) {
      std::cout << "[doctor] distributed.bucket_cap_mb " << cfg.distributed.bucketCapMb << " is measured at "
                << kMostMb << " MiB\n";
    }
    MPI_Comm probe;
    MPI_Comm_dup(MPI_COMM_WORLD, &probe);
    Table links({"from", "to", "path", "latency", concat("bandwidth (", fixed(bucket / 1048576.0, 1), " MiB)")},
                {Table::Align::kLeft, Table::Align::kLeft, Table::Align::kLeft, Table::Align::kRight,
                 Table::Align::kRight});
    // Each pair gets `seconds`, less when there are many, so that doctor stays within about
    // half a minute of measuring on any number of hosts.
    const size_t hostCount = hostOrder.size();
    size_t pairs = hostCount * (hostCount - 1) / 2;
    for (const auto& [host, ranks] : byHost) pairs += ranks.size() > 1 ? 1 : 0;
    const double perPair = std::min(seconds, 20.0 / std::max<size_t>(1, pairs));
    auto measure = [&](int x, int y, const std::string& path) {
      dist::PairFigures f = dist::probePair(probe, x, y, bucket, perPair);
      if (w.rank == x && x != 0) MPI_Send(&f, 2, MPI_DOUBLE, 0, 9, probe);
      if (lead && x != 0) MPI_Recv(&f, 2, MPI_DOUBLE, x, 9, probe, MPI_STATUS_IGNORE);
      MPI_Barrier(probe);
      if (lead) {
        links.row({concat("rank ", x, " (", rows[x][0], ")"), concat("rank ", y, " (", rows[y][0], ")"), path,
                   concat(fixed(f.latencyUs, 1), " us"), rateText(f.bandwidthGBs)});
      }
    };
    for (size_t i = 0; i < hostOrder.size(); ++i) {
      const auto& here = byHost[hostOrder[i]];
      if (here.size() > 1) measure(here[0], here[1], "same host (shared memory)");
      for (size_t j = i + 1; j < hostOrder.size(); ++j) measure(here[0], byHost[hostOrder[j]][0], "between hosts (network)");
    }
    if (lead && w.size > 1) {
      std::cout << "[doctor] links (ping-pong between two ranks, one way):\n" << links.str("  ");
      // Which transports MPI may use, as configured (Open MPI takes --mca settings from the
      // environment); it picks shared memory within a host and a network between hosts.
      const char* btl = std::getenv("OMPI_MCA_btl");
      const char* pml = std::getenv("OMPI_MCA_pml");
      std::cout << "[doctor] Open MPI transports allowed: btl " << (btl ? btl : "(default: all built)") << ", pml "
                << (pml ? pml : "(default)")
                << (pg->backend() == "nccl" ? "; NCCL chooses its own between GPUs (NCCL_DEBUG=INFO names it)" : "")
                << "\n";
    }
    if (w.size > 1) {
      const double raw = dist::rawAllReduceSeconds(probe, bucket, seconds);
      const double ours = dist::forgeAllReduceSeconds(pg->comm(), bucket, pg->device(), seconds);
      // Bus bandwidth, as nccl-tests reports it: what each rank's link carries.
      const double bus = 2.0 * (w.size - 1) / w.size * static_cast<double>(bucket) / 1e9;
      if (lead) {
        std::cout << "[doctor] all-reduce of one bucket (" << fixed(bucket / 1048576.0, 1) << " MiB, " << w.size
                  << " ranks; median time, bus bandwidth):\n"
                  << "  raw MPI_Allreduce    " << fixed(raw * 1e3, 2) << " ms  " << rateText(bus / raw) << "\n"
                  << "  forge (" << pg->backend() << ")" << std::string(pg->backend().size() < 12 ? 12 - pg->backend().size() : 1, ' ')
                  << fixed(ours * 1e3, 2) << " ms  " << rateText(bus / ours) << "  (" << fixed(raw / ours, 2)
                  << "x raw)\n";
      }
    }
    MPI_Comm_free(&probe);
    if (lead) {
      const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      std::cout << "[doctor] every rank runs forge " << FORGE_VERSION << " on the same LibTorch"
                << (a.positional.empty() ? "" : " and read the same config") << "; done in " << fixed(took, 1)
                << " s\n";
    }
    return 0;
  });
}

}  // namespace forge::train
