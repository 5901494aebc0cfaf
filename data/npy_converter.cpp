// forge data from-npy: NumPy .npy arrays (features, and integer or float labels) into the
// layout, streamed block by block.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

#include "core/error.h"
#include "core/strings.h"
#include "data/converter_output.h"
#include "data/converters.h"
#include "data/hdf5_file.h"

namespace forge::data {

namespace fs = std::filesystem;

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

}  // namespace forge::data
