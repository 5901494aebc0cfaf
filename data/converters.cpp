#include "data/converters.h"

#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <functional>
#include <cstdio>
#include <filesystem>
#include <random>
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

// Creates `out`'s temporary sibling, lets `fill` write into it, then renames it into place.
template <typename Fill>
void writeAtomically(const std::string& out, Fill fill) {
  silenceHdf5Errors();
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

void writeSynthetic(const SyntheticSpec& spec, const std::string& out) {
  if (spec.samples <= 0 || spec.features <= 0 || spec.classes < 2) {
    throw ConfigError("synthetic data needs --samples > 0, --features > 0 and --classes >= 2");
  }
  std::mt19937_64 rng(spec.seed);
  // Box-Muller on raw 64-bit draws: the same bytes for the same seed on any standard library.
  auto uniform = [&] { return (static_cast<double>(rng() >> 11) + 0.5) * (1.0 / 9007199254740992.0); };
  auto normal = [&] { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(2.0 * M_PI * uniform()); };
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

void convertNpy(const std::vector<NpySplit>& splits, const std::string& out) {
  if (splits.empty()) throw ConfigError("forge data from-npy needs at least the train split's arrays");
  std::vector<std::pair<Npy, Npy>> arrays;
  for (const auto& s : splits) {
    Npy x = readNpyHeader(s.features);
    Npy y = readNpyHeader(s.labels);
    bool okX = (x.kind == 'u' && x.itemSize == 1) || (x.kind == 'f' && (x.itemSize == 4 || x.itemSize == 8));
    if (!okX) {
      throw DataError(concat("'", x.path, "' holds dtype '", x.descr, "': features must be uint8, float32 or float64"));
    }
    if (x.shape.size() < 2) {
      throw DataError(concat("'", x.path, "' has shape ", dimsText(x.shape),
                             ": features need a sample dimension and at least one feature dimension"));
    }
    if ((y.kind != 'i' && y.kind != 'u') || y.shape.size() != 1) {
      throw DataError(concat("'", y.path, "' holds ", y.descr, " ", dimsText(y.shape),
                             ": labels must be a one-dimensional integer array"));
    }
    if (x.shape[0] != y.shape[0]) {
      throw DataError(concat("split '", s.split, "': '", x.path, "' has ", x.shape[0], " samples but '", y.path,
                             "' has ", y.shape[0]));
    }
    if (x.shape[0] == 0) throw DataError(concat("split '", s.split, "' is empty"));
    arrays.emplace_back(x, y);
  }
  writeAtomically(out, [&](hid_t file) {
    for (size_t i = 0; i < splits.size(); ++i) {
      const auto& [x, y] = arrays[i];
      H5Id group = createGroup(file, splits[i].split);
      hid_t fileType = x.kind == 'u' ? H5T_STD_U8LE : x.itemSize == 4 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE;
      hid_t memType = x.kind == 'u' ? H5T_NATIVE_UINT8 : x.itemSize == 4 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE;
      copyNpy(x, file, splits[i].split + "/features", fileType, memType);
      // Labels of any integer width are stored as int64.
      hid_t labelMem = y.kind == 'u' ? (y.itemSize == 1 ? H5T_STD_U8LE : y.itemSize == 2 ? H5T_STD_U16LE
                                        : y.itemSize == 4 ? H5T_STD_U32LE : H5T_STD_U64LE)
                                     : (y.itemSize == 1 ? H5T_STD_I8LE : y.itemSize == 2 ? H5T_STD_I16LE
                                        : y.itemSize == 4 ? H5T_STD_I32LE : H5T_STD_I64LE);
      copyNpy(y, file, splits[i].split + "/labels", H5T_STD_I64LE, labelMem);
    }
  });
}

}  // namespace forge::data
