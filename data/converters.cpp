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

// DataError when `out` names one of the `inputs` (the same file by another path too): the
// conversion would replace what it reads.
void refuseOverwritingInput(const std::string& out, const std::vector<std::string>& inputs) {
  std::error_code ec;
  for (const auto& in : inputs) {
    if (fs::exists(out, ec) && fs::equivalent(out, in, ec)) {
      throw DataError(concat("--out '", out, "' is the input '", in, "': write the data set to another file"));
    }
  }
}

// Creates `out`'s temporary sibling, lets `fill` write into it, then renames it into place.
template <typename Fill>
void writeAtomically(const std::string& out, Fill fill) {
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

void writeSplit(hid_t file, const std::string& split, const std::vector<hsize_t>& featDims, hid_t featFileType,
                hid_t featMemType, size_t featBytesPerRow, const void* features, const std::vector<int64_t>& labels) {
  H5Id group = createGroup(file, split);
  hsize_t rows = streamingChunkRows(featBytesPerRow);
  writeDataset(file, split + "/features", featFileType, featMemType, featDims, rows, features);
  writeDataset(file, split + "/labels", H5T_STD_I64LE, H5T_NATIVE_INT64, {static_cast<hsize_t>(labels.size())},
               streamingChunkRows(8), labels.data());
}

}  // namespace

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

namespace {

// A NumPy .npy file (format 1.0 to 3.0): dtype, shape, and where the data starts.
struct Npy {
  std::string path;
  char kind = 0;      // 'u' unsigned, 'i' signed, 'f' float
  size_t itemSize = 0;
  std::vector<int64_t> shape;
  long dataOffset = 0;
  std::string descr;
};

Npy readNpyHeader(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw DataError(concat("cannot open '", path, "': ", std::strerror(errno)));
  unsigned char pre[10];
  size_t got = std::fread(pre, 1, sizeof pre, f);
  if (got != sizeof pre || std::memcmp(pre, "\x93NUMPY", 6) != 0) {
    std::fclose(f);
    throw DataError(concat("'", path, "' is not a NumPy .npy file (no \\x93NUMPY magic)"));
  }
  int major = pre[6];
  size_t headerLen = 0;
  long offset = 10;
  if (major == 1) {
    headerLen = pre[8] | (pre[9] << 8);
  } else {
    unsigned char more[2];
    if (std::fread(more, 1, 2, f) != 2) {
      std::fclose(f);
      throw DataError(concat("'", path, "' is truncated"));
    }
    headerLen = pre[8] | (pre[9] << 8) | (more[0] << 16) | (static_cast<size_t>(more[1]) << 24);
    offset = 12;
  }
  std::string header(headerLen, '\0');
  bool ok = std::fread(header.data(), 1, headerLen, f) == headerLen;
  std::fclose(f);
  if (!ok) throw DataError(concat("'", path, "' is truncated (header)"));
  Npy n;
  n.path = path;
  n.dataOffset = offset + static_cast<long>(headerLen);
  auto valueOf = [&](const std::string& key) {
    size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) throw DataError(concat("'", path, "': no '", key, "' in the .npy header"));
    size_t colon = header.find(':', k);
    size_t start = header.find_first_not_of(" ", colon + 1);
    return header.substr(start);
  };
  std::string descr = valueOf("descr");
  n.descr = descr.substr(1, descr.find('\'', 1) - 1);
  if (valueOf("fortran_order").rfind("True", 0) == 0) {
    throw DataError(concat("'", path, "' is stored in Fortran order: save it with np.ascontiguousarray first"));
  }
  if (n.descr.size() < 3 || (n.descr[0] != '<' && n.descr[0] != '|' && n.descr[0] != '=')) {
    throw DataError(concat("'", path, "' holds dtype '", n.descr, "': only little-endian arrays are supported"));
  }
  n.kind = n.descr[1];
  n.itemSize = static_cast<size_t>(std::stoul(n.descr.substr(2)));
  std::string shape = valueOf("shape");
  shape = shape.substr(1, shape.find(')') - 1);
  for (const auto& part : split(shape, ',')) {
    size_t a = part.find_first_not_of(" ");
    if (a == std::string::npos) continue;
    n.shape.push_back(std::stoll(part.substr(a)));
  }
  if (n.shape.empty()) throw DataError(concat("'", path, "' holds a scalar, not an array of samples"));
  return n;
}

// Copies an .npy array into a dataset, block by block; `memType` describes the file's bytes.
void copyNpy(const Npy& n, hid_t file, const std::string& name, hid_t fileType, hid_t memType,
             const std::function<void(const char*, int64_t, int64_t)>& convert = nullptr) {
  int64_t rows = n.shape[0];
  int64_t rowElements = 1;
  for (size_t i = 1; i < n.shape.size(); ++i) rowElements *= n.shape[i];
  const size_t rowBytes = static_cast<size_t>(rowElements) * n.itemSize;
  std::vector<hsize_t> dims(n.shape.begin(), n.shape.end());
  H5Id ds = createRowsDataset(file, name, fileType, dims, streamingChunkRows(rowBytes));
  std::FILE* f = std::fopen(n.path.c_str(), "rb");
  if (f == nullptr || std::fseek(f, n.dataOffset, SEEK_SET) != 0) {
    if (f) std::fclose(f);
    throw DataError(concat("cannot read '", n.path, "'"));
  }
  const int64_t block = std::max<int64_t>(1, static_cast<int64_t>((16u << 20) / std::max<size_t>(1, rowBytes)));
  std::vector<char> buf;
  try {
    for (int64_t first = 0; first < rows; first += block) {
      int64_t m = std::min(block, rows - first);
      buf.resize(static_cast<size_t>(m) * rowBytes);
      if (std::fread(buf.data(), 1, buf.size(), f) != buf.size()) {
        throw DataError(concat("'", n.path, "' is truncated: its header promises ", rows, " rows"));
      }
      if (convert) convert(buf.data(), first, m);
      writeRows(ds.get(), memType, first, m, buf.data());
    }
  } catch (...) {
    std::fclose(f);
    throw;
  }
  std::fclose(f);
}

}  // namespace

namespace {

hid_t npyIntegerType(const Npy& n) {
  if (n.kind == 'u') {
    return n.itemSize == 1 ? H5T_STD_U8LE : n.itemSize == 2 ? H5T_STD_U16LE : n.itemSize == 4 ? H5T_STD_U32LE : H5T_STD_U64LE;
  }
  return n.itemSize == 1 ? H5T_STD_I8LE : n.itemSize == 2 ? H5T_STD_I16LE : n.itemSize == 4 ? H5T_STD_I32LE : H5T_STD_I64LE;
}

bool npyInteger(const Npy& n) {
  return (n.kind == 'i' || n.kind == 'u') && (n.itemSize == 1 || n.itemSize == 2 || n.itemSize == 4 || n.itemSize == 8);
}

bool npyFloat(const Npy& n) { return n.kind == 'f' && (n.itemSize == 4 || n.itemSize == 8); }

}  // namespace

void convertNpy(const std::vector<NpySplit>& splits, const std::string& out) {
  if (splits.empty()) throw ConfigError("forge data from-npy needs at least the train split's arrays");
  std::vector<std::pair<Npy, std::optional<Npy>>> arrays;
  for (const auto& s : splits) {
    refuseOverwritingInput(out, {s.features});
    if (!s.labels.empty()) refuseOverwritingInput(out, {s.labels});
    Npy x = readNpyHeader(s.features);
    if (!npyInteger(x) && !npyFloat(x)) {
      throw DataError(concat("'", x.path, "' holds dtype '", x.descr,
                             "': features must be uint8, float32 or float64 values, or integer token ids"));
    }
    if (x.kind == 'u' && x.itemSize == 8) {
      throw DataError(concat("'", x.path, "' holds uint64 token ids: store them as int64 (ids up to 2^63)"));
    }
    if (x.shape.size() < 2) {
      throw DataError(concat("'", x.path, "' has shape ", dimsText(x.shape),
                             ": features need a sample dimension and at least one feature dimension"));
    }
    if (x.shape[0] == 0) throw DataError(concat("split '", s.split, "' is empty"));
    for (size_t d = 1; d < x.shape.size(); ++d) {
      if (x.shape[d] == 0) {
        throw DataError(concat("'", x.path, "' has shape ", dimsText(x.shape), ": a sample holds no value"));
      }
    }
    std::optional<Npy> y;
    if (!s.labels.empty()) {
      y = readNpyHeader(s.labels);
      if (npyInteger(*y) && y->shape.size() != 1) {
        throw DataError(concat("'", y->path, "' holds ", y->descr, " ", dimsText(y->shape),
                               ": integer labels are one class per sample (N); float targets may have any shape"));
      }
      if (!npyInteger(*y) && !npyFloat(*y)) {
        throw DataError(concat("'", y->path, "' holds dtype '", y->descr,
                               "': labels must be integers (classes) or float32 / float64 (regression targets)"));
      }
      if (x.shape[0] != y->shape[0]) {
        throw DataError(concat("split '", s.split, "': '", x.path, "' has ", x.shape[0], " samples but '", y->path,
                               "' has ", y->shape[0]));
      }
    }
    arrays.emplace_back(x, y);
  }
  // Every split's samples and targets have the first split's shape: a model trained on one
  // is evaluated on the others.
  const auto& [x0, y0] = arrays[0];
  for (size_t i = 1; i < arrays.size(); ++i) {
    const auto& [x, y] = arrays[i];
    auto trailing = [](const Npy& n) { return std::vector<int64_t>(n.shape.begin() + 1, n.shape.end()); };
    if (trailing(x) != trailing(x0)) {
      throw DataError(concat("'", x.path, "' has samples of shape ", dimsText(trailing(x)), " but '", x0.path,
                             "' has ", dimsText(trailing(x0)), ": every split's must match"));
    }
    if (y && y0 && trailing(*y) != trailing(*y0)) {
      throw DataError(concat("'", y->path, "' has targets of shape ", dimsText(trailing(*y)), " but '", y0->path,
                             "' has ", dimsText(trailing(*y0)), ": every split's must match"));
    }
  }
  writeAtomically(out, [&](hid_t file) {
    for (size_t i = 0; i < splits.size(); ++i) {
      const auto& [x, y] = arrays[i];
      H5Id group = createGroup(file, splits[i].split);
      // Values and token ids are stored as they are; HDF5 reads them back in their type.
      hid_t type = npyFloat(x) ? (x.itemSize == 4 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE) : npyIntegerType(x);
      copyNpy(x, file, splits[i].split + "/features", type, type);
      if (!y) continue;
      if (npyFloat(*y)) {
        hid_t ft = y->itemSize == 4 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE;
        copyNpy(*y, file, splits[i].split + "/labels", ft, ft);
      } else {
        copyNpy(*y, file, splits[i].split + "/labels", H5T_STD_I64LE, npyIntegerType(*y));  // classes as int64
      }
    }
  });
}

namespace {

// The files a text input names: itself, or a folder's regular files in name order.
std::vector<fs::path> textFiles(const std::vector<std::string>& inputs, int64_t& skippedLinks) {
  std::vector<fs::path> out;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<fs::path> here;
      for (const auto& e : fs::directory_iterator(in, ec)) {
        if (e.is_symlink()) {
          ++skippedLinks;
        } else if (e.is_regular_file()) {
          here.push_back(e.path());
        }
      }
      if (ec) throw DataError(concat("cannot list '", in, "': ", ec.message()));
      std::sort(here.begin(), here.end());
      out.insert(out.end(), here.begin(), here.end());
    } else if (fs::is_regular_file(in, ec)) {
      out.emplace_back(in);
    } else {
      throw DataError(concat("'", in, "' is no text file or folder", ec ? concat(" (", ec.message(), ")") : ""));
    }
  }
  return out;
}

std::string readFileBytes(const fs::path& p) {
  std::FILE* f = std::fopen(p.c_str(), "rb");
  if (f == nullptr) throw DataError(concat("cannot open '", p.string(), "': ", std::strerror(errno)));
  std::string bytes;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.append(buf, got);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw DataError(concat("cannot read '", p.string(), "'"));
  return bytes;
}

// Rows of context + 1 bytes, stride context.
std::vector<uint8_t> sequencesOf(const std::string& stream, int64_t context, int64_t& rows) {
  const int64_t len = static_cast<int64_t>(stream.size());
  rows = len > context ? (len - 1) / context : 0;
  std::vector<uint8_t> out(static_cast<size_t>(rows * (context + 1)));
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out.data() + r * (context + 1), stream.data() + r * context, static_cast<size_t>(context + 1));
  }
  return out;
}

}  // namespace

TextSummary convertText(const TextSpec& spec, const std::string& out) {
  if (spec.context < 1) throw ConfigError("forge data text needs --context >= 1");
  if (!(spec.testFraction > 0 && spec.testFraction < 1)) {
    throw ConfigError("forge data text needs --test-fraction in (0, 1)");
  }
  if (spec.inputs.empty()) throw ConfigError("forge data text needs at least one text file or folder");
  TextSummary sum;
  std::string train, test;
  const std::vector<fs::path> files = textFiles(spec.inputs, sum.skipped);
  for (const auto& p : files) refuseOverwritingInput(out, {p.string()});
  for (const auto& p : files) {
    std::string bytes = readFileBytes(p);
    if (bytes.find('\0') < std::min<size_t>(bytes.size(), 8192)) {
      ++sum.skipped;  // binary (an index file, an image): not text to model
      continue;
    }
    ++sum.files;
    const size_t held = static_cast<size_t>(static_cast<double>(bytes.size()) * spec.testFraction);
    train.append(bytes, 0, bytes.size() - held);
    test.append(bytes, bytes.size() - held, held);
  }
  int64_t trainRows = 0, testRows = 0;
  std::vector<uint8_t> trainSeq = sequencesOf(train, spec.context, trainRows);
  std::vector<uint8_t> testSeq = sequencesOf(test, spec.context, testRows);
  if (trainRows == 0 || testRows == 0) {
    throw DataError(concat("the text (", withThousands(static_cast<int64_t>(train.size())), " training and ",
                           withThousands(static_cast<int64_t>(test.size())), " held-out bytes from ", sum.files,
                           " file(s)) is too short for one sequence of ", spec.context + 1,
                           " bytes in each split: give more text or a shorter --context"));
  }
  // The held-out targets: bytes 1 .. rows x context of the held-out stream.
  std::array<int64_t, 256> counts{};
  for (int64_t i = 1; i <= testRows * spec.context; ++i) ++counts[static_cast<uint8_t>(test[static_cast<size_t>(i)])];
  const double total = static_cast<double>(testRows * spec.context);
  for (int64_t c : counts) {
    if (c > 0) sum.unigramEntropyNats -= static_cast<double>(c) / total * std::log(static_cast<double>(c) / total);
  }
  const hsize_t width = static_cast<hsize_t>(spec.context + 1);
  writeAtomically(out, [&](hid_t file) {
    for (auto [name, rows, data] : {std::tuple<const char*, int64_t, const std::vector<uint8_t>*>{"train", trainRows, &trainSeq},
                                   {"test", testRows, &testSeq}}) {
      H5Id group = createGroup(file, name);
      writeDataset(file, std::string(name) + "/features", H5T_STD_U8LE, H5T_NATIVE_UINT8,
                   {static_cast<hsize_t>(rows), width}, streamingChunkRows(width), data->data());
      if (std::string(name) == "test") writeDoubleAttribute(group.get(), "unigram_entropy_nats", sum.unigramEntropyNats);
    }
  });
  sum.trainBytes = static_cast<int64_t>(train.size());
  sum.testBytes = static_cast<int64_t>(test.size());
  sum.trainSequences = trainRows;
  sum.testSequences = testRows;
  return sum;
}

}  // namespace forge::data
