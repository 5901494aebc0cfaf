#include "data/converters.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <functional>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/strings.h"
#include "data/converter_output.h"
#include "data/hdf5_file.h"

namespace forge::data {
namespace {

namespace fs = std::filesystem;

std::vector<unsigned char> readMaybeGzipped(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
  if (f == nullptr) throw DataError(concat("cannot open '", path, "'"));
  std::vector<unsigned char> out;
  unsigned char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  std::string reason = (n < 0 && msg) ? msg : "";
  gzclose(f);
  if (n < 0) throw DataError(concat("cannot read '", path, "': ", reason));
  return out;
}

uint32_t bigEndian32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// idx format: magic (0x0000 08 <ndims>), ndims big-endian uint32 sizes, then uint8 data.
struct Idx {
  std::vector<uint32_t> dims;
  std::vector<unsigned char> data;
};

Idx readIdx(const std::string& path, int expectDims) {
  auto bytes = readMaybeGzipped(path);
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] != expectDims) {
    throw DataError(concat("'", path, "' is not an idx file of uint8 with ", expectDims, " dimensions"));
  }
  Idx idx;
  size_t header = 4 + 4 * static_cast<size_t>(expectDims);
  if (bytes.size() < header) throw DataError(concat("'", path, "' is truncated (header)"));
  size_t total = 1;
  for (int d = 0; d < expectDims; ++d) {
    idx.dims.push_back(bigEndian32(&bytes[4 + 4 * d]));
    total *= idx.dims.back();
  }
  if (bytes.size() != header + total) {
    throw DataError(concat("'", path, "' holds ", bytes.size() - header, " data bytes, its header promises ", total));
  }
  idx.data.assign(bytes.begin() + header, bytes.end());
  return idx;
}

std::string findIdx(const std::string& dir, const std::string& stem) {
  for (const char* suffix : {".gz", ""}) {
    std::string p = (fs::path(dir) / (stem + suffix)).string();
    if (fs::exists(p)) return p;
  }
  throw DataError(concat("no '", stem, "' or '", stem, ".gz' in '", dir,
                      "' (install Debian's dataset-fashion-mnist or pass --source DIR)"));
}

void writeSplit(hid_t file, const std::string& split, const std::vector<hsize_t>& featDims, hid_t featFileType,
                hid_t featMemType, size_t featBytesPerRow, const void* features, const std::vector<int64_t>& labels) {
  H5Id group = createGroup(file, split);
  hsize_t rows = streamingChunkRows(featBytesPerRow);
  writeDataset(file, split + "/features", featFileType, featMemType, featDims, rows, features);
  writeDataset(file, split + "/labels", H5T_STD_I64LE, H5T_NATIVE_INT64, {static_cast<hsize_t>(labels.size())},
               streamingChunkRows(8), labels.data());
}

}  // namespace

void refuseOverwritingInput(const std::string& out, const std::vector<std::string>& inputs) {
  std::error_code ec;
  for (const auto& in : inputs) {
    if (fs::exists(out, ec) && fs::equivalent(out, in, ec)) {
      throw DataError(concat("--out '", out, "' is the input '", in, "': write the data set to another file"));
    }
  }
}

void writeAtomically(const std::string& out, const std::function<void(hid_t)>& fill) {
  silenceHdf5Errors();
  if (out.empty()) throw DataError("--out names no file");
  std::error_code dirEc;
  if (fs::is_directory(out, dirEc)) throw DataError(concat("--out '", out, "' is a folder: name the file to write"));
  fs::path target(out);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  std::string tmp = out + ".tmp." + std::to_string(::getpid());
  try {
    {
      hid_t id = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
      if (id < 0) throw DataError(concat("cannot create '", tmp, "'"));
      H5Id file(id);
      fill(file.get());
      FORGE_H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "cannot flush '", tmp, "'");
    }
    fs::rename(tmp, target);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

void convertFashionMnist(const std::string& sourceDir, const std::string& out) {
  struct Part {
    const char* split;
    const char* images;
    const char* labels;
  };
  const Part parts[] = {{"train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
                        {"test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}};
  std::vector<Idx> images, labels;
  for (const auto& p : parts) {
    refuseOverwritingInput(out, {findIdx(sourceDir, p.images), findIdx(sourceDir, p.labels)});
    images.push_back(readIdx(findIdx(sourceDir, p.images), 3));
    labels.push_back(readIdx(findIdx(sourceDir, p.labels), 1));
    if (images.back().dims[0] != labels.back().dims[0]) {
      throw DataError(concat("Fashion-MNIST ", p.split, ": ", images.back().dims[0], " images but ",
                          labels.back().dims[0], " labels"));
    }
  }
  writeAtomically(out, [&](hid_t file) {
    for (size_t i = 0; i < 2; ++i) {
      const Idx& im = images[i];
      hsize_t n = im.dims[0], d = static_cast<hsize_t>(im.dims[1]) * im.dims[2];
      std::vector<int64_t> lab(labels[i].data.begin(), labels[i].data.end());
      writeSplit(file, parts[i].split, {n, d}, H5T_STD_U8LE, H5T_NATIVE_UINT8, d, im.data.data(), lab);
    }
  });
}

namespace {

// Box-Muller on raw 64-bit draws: the same bytes for the same seed on any standard library.
struct Normal {
  std::mt19937_64 rng;
  explicit Normal(uint64_t seed) : rng(seed) {}
  double uniform() { return (static_cast<double>(rng() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double operator()() { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(2.0 * M_PI * uniform()); }
};

void writeSyntheticRegression(const SyntheticSpec& spec, const std::string& out) {
  Normal normal(spec.seed);
  const int64_t d = spec.features, t = spec.targets;
  std::vector<double> w(d * t), b(t);
  for (auto& v : w) v = normal() / std::sqrt(static_cast<double>(d));
  for (auto& v : b) v = normal();
  const int64_t blockRows = std::max<int64_t>(1, (16 << 20) / (4 * (d + t)));
  auto writeSplit = [&](hid_t file, const std::string& split, int64_t n) {
    H5Id group = createGroup(file, split);
    H5Id feat = createRowsDataset(file, split + "/features", H5T_IEEE_F32LE,
                                  {static_cast<hsize_t>(n), static_cast<hsize_t>(d)}, streamingChunkRows(d * 4));
    std::vector<hsize_t> labelDims{static_cast<hsize_t>(n)};
    if (t > 1) labelDims.push_back(static_cast<hsize_t>(t));
    H5Id lab = createRowsDataset(file, split + "/labels", H5T_IEEE_F32LE, labelDims, streamingChunkRows(t * 4));
    std::vector<float> x, y;
    for (int64_t first = 0; first < n; first += blockRows) {
      const int64_t m = std::min(blockRows, n - first);
      x.resize(m * d);
      y.resize(m * t);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t f = 0; f < d; ++f) x[i * d + f] = static_cast<float>(normal());
        for (int64_t k = 0; k < t; ++k) {
          double v = b[k];
          for (int64_t f = 0; f < d; ++f) v += static_cast<double>(x[i * d + f]) * w[f * t + k];
          y[i * t + k] = static_cast<float>(v + spec.noise * normal());
        }
      }
      writeRows(feat.get(), H5T_NATIVE_FLOAT, first, m, x.data());
      writeRows(lab.get(), H5T_NATIVE_FLOAT, first, m, y.data());
      if (spec.progress) spec.progress(split, first + m, n);
    }
    writeDoubleAttribute(group.get(), "noise_floor_mse", spec.noise * spec.noise);
  };
  writeAtomically(out, [&](hid_t file) {
    writeSplit(file, "train", spec.samples);
    writeSplit(file, "test", std::max<int64_t>(1, spec.samples / 5));
  });
}

}  // namespace

void writeSynthetic(const SyntheticSpec& spec, const std::string& out) {
  if (spec.samples <= 0 || spec.features <= 0 || (spec.targets == 0 && spec.classes < 2) || spec.targets < 0) {
    throw ConfigError("synthetic data needs --samples > 0, --features > 0 and --classes >= 2 (or --targets >= 1)");
  }
  if (spec.targets > 0 && !(spec.noise >= 0 && std::isfinite(spec.noise))) {
    throw ConfigError("synthetic regression data needs --noise >= 0");
  }
  if (spec.targets > 0) return writeSyntheticRegression(spec, out);
  Normal normal(spec.seed);
  std::mt19937_64& rng = normal.rng;
  // Centres ~ N(0, s^2) per feature with s = 3 / sqrt(2 D): two centres lie ~3 noise
  // standard deviations apart whatever D is, so the set is learnable but not trivial.
  const double s = 3.0 / std::sqrt(2.0 * static_cast<double>(spec.features));
  std::vector<float> centres(spec.classes * spec.features);
  for (auto& c : centres) c = static_cast<float>(s * normal());
  const hsize_t d = static_cast<hsize_t>(spec.features);
  // Streams block by block (16 MiB of features), so files of any size fit in memory.
  const int64_t blockRows = std::max<int64_t>(1, (16 << 20) / (4 * spec.features));
  auto writeSplitStreaming = [&](hid_t file, const std::string& split, int64_t n, ProgressFn progress) {
    H5Id group = createGroup(file, split);
    H5Id feat = createRowsDataset(file, split + "/features", H5T_IEEE_F32LE, {static_cast<hsize_t>(n), d},
                                  streamingChunkRows(d * 4));
    H5Id lab = createRowsDataset(file, split + "/labels", H5T_STD_I64LE, {static_cast<hsize_t>(n)},
                                 streamingChunkRows(8));
    std::vector<float> x;
    std::vector<int64_t> y;
    for (int64_t first = 0; first < n; first += blockRows) {
      int64_t m = std::min(blockRows, n - first);
      x.resize(m * spec.features);
      y.resize(m);
      for (int64_t i = 0; i < m; ++i) {
        int64_t c = static_cast<int64_t>(rng() % static_cast<uint64_t>(spec.classes));
        y[i] = c;
        for (int64_t f = 0; f < spec.features; ++f) {
          x[i * spec.features + f] = centres[c * spec.features + f] + static_cast<float>(normal());
        }
      }
      writeRows(feat.get(), H5T_NATIVE_FLOAT, first, m, x.data());
      writeRows(lab.get(), H5T_NATIVE_INT64, first, m, y.data());
      if (progress) progress(split, first + m, n);
    }
  };
  writeAtomically(out, [&](hid_t file) {
    writeSplitStreaming(file, "train", spec.samples, spec.progress);
    writeSplitStreaming(file, "test", std::max<int64_t>(1, spec.samples / 5), spec.progress);
  });
}

}  // namespace forge::data
