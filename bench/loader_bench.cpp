// The streaming loader against a raw sequential read of the same bytes with the HDF5 C API,
// over one synthetic file (made if missing; --gib sets its size), in one run:
//   raw      H5Dread of train/features front to back in 8 MiB hyperslabs into one buffer
//   loader   forge's SplitSource + DistributedSampler (shuffled) + BatchLoader, rank 0 of
//            --world ranks (1), set up as the trainer does, every batch taken: reading,
//            shuffling, converting to normalized float32 (its bytes/s are of its own share)
// Both run warm (the file in the page cache), alternating for --rounds rounds (5); the
// ratio is the loader's median bytes/s over the raw read's median. Peak RSS is the
// process's high-water mark (getrusage) after the loader has streamed whole epochs.
//
// With --cold 1 the page cache is emptied before each timed read (root only), so both read
// from storage (1 round unless --rounds says more).
//
//   loader_bench --file /tmp/big.h5 [--gib 4] [--batch 64] [--buffer-mb 64] [--cold 1] [--rounds N] [--world N]
//                [--global-batch-size N]
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "data/batch_loader.h"
#include "data/converters.h"
#include "data/hdf5_file.h"
#include "data/sampler.h"
#include "data/source.h"

using namespace forge;
using Clock = std::chrono::steady_clock;

namespace {

bool gCold = false;

// --cold: empties the page cache first, so that both sides read from storage (needs root).
void maybeDropCaches() {
  if (!gCold) return;
  ::sync();
  std::FILE* f = std::fopen("/proc/sys/vm/drop_caches", "w");
  if (f == nullptr || std::fputs("3\n", f) < 0 || std::fclose(f) != 0) {
    std::fprintf(stderr, "--cold: cannot drop the page cache (needs root); measuring warm\n");
    gCold = false;
  }
}

double seconds(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double peakRssMiB() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

// Bytes/s of a plain front-to-back read of the features.
double rawRead(const std::string& path, int64_t& bytes) {
  data::H5Id file = data::openFileReadOnly(path);
  data::H5Id ds = data::openDataset(file.get(), path, "train/features");
  data::H5DatasetInfo info = data::datasetInfo(ds.get());
  const hsize_t rows = info.dims[0];
  const hsize_t rowBytes = info.dims[1] * info.typeSize;
  const hsize_t per = std::max<hsize_t>(1, (8u << 20) / rowBytes);
  std::vector<char> buf(per * rowBytes);
  maybeDropCaches();
  auto start = Clock::now();
  for (hsize_t r = 0; r < rows; r += per) {
    hsize_t n = std::min(per, rows - r);
    data::readRows(ds.get(), H5T_NATIVE_FLOAT, r, n, buf.data());
  }
  bytes = static_cast<int64_t>(rows * rowBytes);
  return bytes / seconds(start);
}

}  // namespace

int main(int argc, char** argv) {
  std::string file = "/tmp/forge_loader_bench.h5";
  double gib = 4;
  int64_t batch = 64;
  double bufferMb = 64;
  int rounds = 0;  // 0: 5 warm, 1 cold
  int world = 1;
  int64_t globalBatchSize = -1;  // -1: batch x world
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--file") file = argv[i + 1];
    else if (k == "--gib") gib = std::stod(argv[i + 1]);
    else if (k == "--batch") batch = std::stoll(argv[i + 1]);
    else if (k == "--buffer-mb") bufferMb = std::stod(argv[i + 1]);
    else if (k == "--cold") gCold = std::string(argv[i + 1]) == "1";
    else if (k == "--rounds") rounds = std::stoi(argv[i + 1]);
    else if (k == "--world") world = std::stoi(argv[i + 1]);
    else if (k == "--global-batch-size") globalBatchSize = std::stoll(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  data::silenceHdf5Errors();
  const int64_t features = 784;
  const int64_t samples = static_cast<int64_t>(gib * (1ull << 30) / (features * 4)) + 1;
  bool remake = true;
  if (std::filesystem::exists(file)) {
    data::SplitSource probe({{file}, "train", "features", "labels", 10});
    remake = probe.size() != samples;
  }
  if (remake) {
    std::printf("writing %s: %lld x %lld float32 (%.2f GiB) ...\n", file.c_str(), static_cast<long long>(samples),
                static_cast<long long>(features), samples * features * 4.0 / (1ull << 30));
    std::fflush(stdout);
    data::SyntheticSpec spec;
    spec.samples = samples;
    spec.features = features;
    spec.classes = 10;
    spec.seed = 1;
    data::writeSynthetic(spec, file);
  }
  std::printf("peak RSS before streaming  %.0f MiB  (LibTorch and HDF5 loaded%s)\n", peakRssMiB(),
              remake ? ", the file just written" : "");
  if (rounds <= 0) rounds = gCold ? 1 : 5;
  int64_t bytes = 0;
  if (!gCold) rawRead(file, bytes);  // warms the page cache

  data::SplitSource source({{file}, "train", "features", "labels", 10});
  if (globalBatchSize < 0) globalBatchSize = batch * world;
  // As trainer/engine/setup.cpp sets them up: a global window of the buffer's size, rank
  // 0's share of each global batch, runs that step over the other ranks' rows.
  // --global-batch-size 0 measures a config without data.global_batch_size (windows then
  // not aligned with steps); the default is the main job's (batch x world set).
  const int64_t window = data::globalWindowFor(static_cast<size_t>(bufferMb * (1 << 20)),
                                               source.rowElements() * sizeof(float), globalBatchSize);
  data::DistributedSampler sampler(source.blocks(), 0, world, 7, true, false, window, batch, batch * world);
  data::LoaderOptions o;
  o.batchSize = batch;
  o.window = window;
  o.maxGap = 8 * int64_t{world} - 1;
  // This machine's memory bandwidth drifts from minute to minute: the two sides alternate,
  // round by round, and the ratio is of their medians.
  std::vector<double> raws, loaders;
  int64_t got = 0;
  double busyRead = 0, busyConvert = 0;
  for (int round = 0; round < rounds; ++round) {
    raws.push_back(rawRead(file, bytes));
    data::BatchLoader loader(source, data::Normalization{1.0, {0.1}, {2.0}}, o);
    sampler.setEpoch(round);
    data::DistributedSampler::Plan plan = sampler.plan(0);
    maybeDropCaches();
    auto start = Clock::now();
    loader.start(std::move(plan.indices), 0, std::move(plan.windowStarts));
    got = 0;
    while (auto b = loader.next()) got += b->y.size(0);
    loaders.push_back(static_cast<double>(got) * source.rowBytes() / seconds(start));
    busyRead = loader.readSeconds();
    busyConvert = loader.assembleSeconds();
    std::printf("round %d: raw HDF5 sequential read %.0f MiB/s, forge loader %.0f MiB/s (%.2fx); loader threads "
                "busy: reading %.2f s, converting %.2f s, of %.2f s\n",
                round + 1, raws.back() / (1 << 20), loaders.back() / (1 << 20), loaders.back() / raws.back(), busyRead,
                busyConvert, static_cast<double>(got) * source.rowBytes() / loaders.back());
    std::fflush(stdout);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  };
  double rss = peakRssMiB();
  std::printf("raw HDF5 sequential read   %.0f MiB/s  (%.2f GiB, median of %d)\n", median(raws) / (1 << 20),
              bytes / double(1ull << 30), rounds);
  std::printf("forge loader               %.0f MiB/s  (median of %d; %lld samples, batch %lld, shuffled, normalized "
              "float32)\n",
              median(loaders) / (1 << 20), rounds, static_cast<long long>(got), static_cast<long long>(batch));
  std::printf("peak RSS                   %.0f MiB  (read buffer %.0f MiB, file %.2f GiB)\n", rss, bufferMb,
              bytes / double(1ull << 30));
  std::vector<double> ratios;
  for (size_t i = 0; i < raws.size(); ++i) ratios.push_back(loaders[i] / raws[i]);
  std::printf("round ratios               %.2fx to %.2fx\n", *std::min_element(ratios.begin(), ratios.end()),
              *std::max_element(ratios.begin(), ratios.end()));
  std::printf("ratio loader/raw = %.2f\n", median(loaders) / median(raws));
  std::printf("peak rss MiB = %.0f\n", rss);
  return got == source.size() ? 0 : 1;
}
