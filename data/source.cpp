#include "data/source.h"

#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <utility>

#include "core/error.h"
#include "core/names.h"
#include "core/strings.h"
#include "data/dataset_checks.h"
#include "data/file_state.h"
#include "data/hdf5_file.h"
#include "data/mapped_pages.h"
#include "data/source_layout.h"

namespace forge::data {

struct SplitSource::File {
  std::string path;
  H5Id file;
  H5Id features;
  int64_t rows = 0;
  int64_t firstGlobal = 0;
  hsize_t chunkRows = 0;
  // Chunks stored exactly as forge reads them (no filter, the native type, whole rows) are
  // read with H5Dread_chunk: the bytes straight into forge's buffer, without HDF5's
  // selection and conversion machinery.
  bool rawChunks = false;
  // A contiguous dataset in the native type: the rows start at this file offset.
  haddr_t contiguousAt = HADDR_UNDEF;
  // Our own descriptor of the file for map(); -1 when its rows cannot be mapped.
  int fd = -1;
  // HDF5's descriptor of the file (owned by HDF5), and what the file was when opened: every
  // read and map compares its size and modification time with it (one fstat), the epoch
  // boundary also its identity (changeOf).
  int hdf5Fd = -1;
  FileState opened;
  // Throws DataError when the file's size or modification time is no longer `opened`.
  void requireUnchanged() const;
  // Sets rawChunks, contiguousAt and fd: how the stored rows of `features` may be taken.
  void findStorage(const H5DatasetInfo& fi, at::ScalarType type);
  ~File() {
    if (fd >= 0) ::close(fd);
  }
};

namespace {

hid_t nativeType(at::ScalarType type) {
  switch (type) {
    case at::kByte: return H5T_NATIVE_UINT8;
    case at::kFloat: return H5T_NATIVE_FLOAT;
    case at::kInt: return H5T_NATIVE_INT32;
    case at::kLong: return H5T_NATIVE_INT64;
    default: return H5T_NATIVE_DOUBLE;
  }
}

}  // namespace

MappedRows::~MappedRows() {
  if (base_ != nullptr) ::munmap(base_, length_);
}

MappedRows& MappedRows::operator=(MappedRows&& o) noexcept {
  if (this != &o) {
    if (base_ != nullptr) ::munmap(base_, length_);
    base_ = std::exchange(o.base_, nullptr);
    length_ = std::exchange(o.length_, 0);
    rows_ = std::exchange(o.rows_, nullptr);
  }
  return *this;
}

SplitSource::~SplitSource() {
  Hdf5Lock lock;
  files_.clear();
}
SplitSource::SplitSource(SplitSource&&) noexcept = default;
SplitSource& SplitSource::operator=(SplitSource&&) noexcept = default;

std::vector<std::string> expandPaths(const std::vector<std::string>& patterns) {
  std::vector<std::string> out;
  for (const auto& p : patterns) {
    if (p.find_first_of("*?[") == std::string::npos) {
      out.push_back(p);  // a plain path: opening it reports what is wrong with it
      continue;
    }
    glob_t g{};
    int rc = ::glob(p.c_str(), 0, nullptr, &g);
    if (rc == 0) {
      std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);
      std::sort(matches.begin(), matches.end());
      out.insert(out.end(), matches.begin(), matches.end());
    }
    globfree(&g);
    if (rc != 0) throw DataError(concat("data.path pattern '", p, "' matches no file"));
  }
  if (out.empty()) throw DataError("data.path names no file");
  return out;
}

const char* targetsName(Targets t) {
  switch (t) {
    case Targets::kClasses: return "class labels";
    case Targets::kValues: return "float targets";
    case Targets::kNextTokens: return "next tokens";
  }
  return "?";
}

SplitSource::SplitSource(const SourceSpec& spec) : targets_(spec.targets), split_(spec.split) {
  Hdf5Lock lock;
  featuresName_ = spec.split + "/" + spec.features;
  std::vector<at::Tensor> labelParts;
  for (const auto& path : expandPaths(spec.paths)) labelParts.push_back(addFile(path, spec));
  if (targets_ != Targets::kNextTokens) {
    for (size_t k = 1; k < labelParts.size(); ++k) {
      if (labelParts[k].sizes().slice(1) != labelParts[0].sizes().slice(1)) {
        throw DataError(concat("data file '", files_[k]->path, "', dataset '", spec.split, "/", spec.labels,
                               "': targets of shape ", dimsText(labelParts[k].sizes().slice(1).vec()), " but '",
                               files_[0]->path, "' holds ", dimsText(labelParts[0].sizes().slice(1).vec()),
                               ": every file of a split must match"));
      }
    }
    labels_ = labelParts.size() == 1 ? labelParts[0] : at::cat(labelParts);
  }
  name_ = files_.size() == 1 ? concat(files_[0]->path, ":", spec.split)
                             : concat(files_.size(), " files (", files_[0]->path, " ...):", spec.split);
}

at::Tensor SplitSource::addFile(const std::string& path, const SourceSpec& spec) {
  const std::string labelName = spec.split + "/" + spec.labels;
  auto f = std::make_unique<File>();
  f->path = path;
  f->file = openFileReadOnly(path);
  void* handle = nullptr;
  FORGE_H5_CHECK(H5Fget_vfd_handle(f->file.get(), H5P_DEFAULT, &handle), "cannot find the descriptor of '", path, "'");
  f->hdf5Fd = *static_cast<int*>(handle);  // the default (sec2) driver's handle is its descriptor
  f->opened = FileState::of(f->hdf5Fd, path);
  if (!objectExists(f->file.get(), spec.split)) {
    throw DataError(concat("data file '", path, "' has no split group '", spec.split, "'"));
  }
  f->features = openDataset(f->file.get(), path, featuresName_);
  H5DatasetInfo fi = datasetInfo(f->features.get());
  bool tokens = false;
  const at::ScalarType type = featureTypeOf(path, featuresName_, fi, spec, tokens);
  checkFeatureShape(path, spec.split, featuresName_, fi, spec);
  const auto fileBytes = static_cast<uint64_t>(f->opened.size);
  checkStoredValues(f->file.get(), f->features.get(), fi, path, featuresName_, fileBytes);
  at::Tensor labels;
  if (spec.targets != Targets::kNextTokens) {  // next tokens come from the features: no labels read
    H5Id lab = openDataset(f->file.get(), path, labelName);
    H5DatasetInfo li = datasetInfo(lab.get());
    checkLabels(path, featuresName_, fi, labelName, li, spec);
    checkStoredValues(f->file.get(), lab.get(), li, path, labelName, fileBytes);
    labels = readLabels(lab.get(), li, spec, datasetWhere(path, labelName));
  }
  matchFirstFile(path, std::vector<int64_t>(fi.dims.begin() + 1, fi.dims.end()), type);
  tokens_ = tokens;
  if (files_.empty()) storedTypeName_ = fi.typeName();
  f->rows = static_cast<int64_t>(fi.dims[0]);
  f->firstGlobal = size_;
  f->chunkRows = chunkRows(f->features.get());
  f->findStorage(fi, type);
  addBlocks(*f);
  size_ += f->rows;
  files_.push_back(std::move(f));
  return labels;
}

void SplitSource::matchFirstFile(const std::string& path, const std::vector<int64_t>& shape, at::ScalarType type) {
  if (files_.empty()) {
    sampleShape_ = shape;
    type_ = type;
    rowElements_ = 1;
    for (int64_t d : shape) rowElements_ *= d;
  } else if (shape != sampleShape_ || type != type_) {
    throw DataError(datasetWhere(path, featuresName_) +
                    concat("samples are ", at::toString(type), " ", dimsText(shape), " but '", files_[0]->path,
                           "' holds ", at::toString(type_), " ", dimsText(sampleShape_),
                           ": every file of a split must match"));
  }
}

void SplitSource::File::findStorage(const H5DatasetInfo& fi, at::ScalarType type) {
  if (chunkRows > 0) {
    H5Id dcpl(H5Dget_create_plist(features.get()));
    H5Id stored(H5Dget_type(features.get()));
    std::vector<hsize_t> chunk(fi.dims.size());
    bool wholeRows = dcpl.valid() && H5Pget_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()) ==
                                         static_cast<int>(chunk.size());
    for (size_t d = 1; wholeRows && d < chunk.size(); ++d) wholeRows = chunk[d] == fi.dims[d];
    // H5Dread_chunk fails on a chunk never written (the fill value stands in for it): only
    // datasets with every chunk stored are read chunk by chunk.
    int64_t expected = 1;
    for (size_t d = 0; wholeRows && d < chunk.size(); ++d) {
      const auto perDim = static_cast<int64_t>((fi.dims[d] + chunk[d] - 1) / chunk[d]);
      wholeRows = !__builtin_mul_overflow(expected, perDim, &expected);
    }
    rawChunks = wholeRows && H5Pget_nfilters(dcpl.get()) == 0 && stored.valid() &&
                H5Tequal(stored.get(), nativeType(type)) > 0 && std::getenv("FORGE_NO_DIRECT_CHUNKS") == nullptr &&
                storedChunks(features.get()) == expected;
  } else {
    H5Id stored(H5Dget_type(features.get()));
    if (stored.valid() && H5Tequal(stored.get(), nativeType(type)) > 0) contiguousAt = H5Dget_offset(features.get());
  }
  if ((rawChunks || contiguousAt != HADDR_UNDEF) && std::getenv(env::kNoMappedReads) == nullptr) {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // -1: read() serves instead
    if (fd >= 0) {
      // The path may name another file than HDF5 opened a moment ago (replaced meanwhile).
      const FileState mine = FileState::of(fd, path);
      if (mine.device != opened.device || mine.inode != opened.inode) {
        throw DataError(changedFileMessage(path, "replaced (the path names another file now)"));
      }
      installMappedPagesHandler();
    }
  }
}

void SplitSource::File::requireUnchanged() const {
  const std::string change = FileState::changeOfContent(opened, hdf5Fd);
  if (!change.empty()) throw DataError(changedFileMessage(path, change));
}

void SplitSource::addBlocks(const File& f) {
  // Whole chunks, about 1 MiB each (at least one chunk).
  int64_t per = static_cast<int64_t>(streamingChunkRows(rowBytes()));
  if (f.chunkRows > 0) {
    int64_t c = static_cast<int64_t>(f.chunkRows);
    per = std::max<int64_t>(c, per / c * c);
  }
  for (int64_t r = 0; r < f.rows; r += per) {
    blocks_.push_back(Block{static_cast<int>(files_.size()), r, std::min(per, f.rows - r), size_ + r});
  }
}

int SplitSource::fileOf(int64_t sample) const {
  // Files are few; the last one whose first sample is <= sample.
  int f = 0;
  while (f + 1 < static_cast<int>(files_.size()) && files_[f + 1]->firstGlobal <= sample) ++f;
  return f;
}

int64_t SplitSource::fileEnd(int fileIndex) const {
  return files_[fileIndex]->firstGlobal + files_[fileIndex]->rows;
}

std::string SplitSource::locate(int64_t sample) const {
  const File& f = *files_[fileOf(sample)];
  return concat("file '", f.path, "', dataset '", featuresName_, "', row ", sample - f.firstGlobal);
}

uint64_t SplitSource::rowsStart(int64_t first, int64_t count) const {
  const File& f = *files_[fileOf(first)];
  if (f.fd < 0 || count <= 0 || first - f.firstGlobal + count > f.rows) return HADDR_UNDEF;
  const int64_t row = first - f.firstGlobal;
  haddr_t start = HADDR_UNDEF;
  if (f.contiguousAt != HADDR_UNDEF) {
    start = f.contiguousAt + static_cast<haddr_t>(row) * rowBytes();
  } else {
    // Every chunk the rows touch: unfiltered, whole, and right after the one before.
    const int64_t c = static_cast<int64_t>(f.chunkRows);
    const hsize_t chunkBytes = static_cast<hsize_t>(c) * rowBytes();
    std::vector<hsize_t> offset(sampleShape_.size() + 1, 0);
    haddr_t firstChunk = HADDR_UNDEF;
    Hdf5Lock lock;
    for (int64_t k = row / c; k <= (row + count - 1) / c; ++k) {
      offset[0] = static_cast<hsize_t>(k * c);
      unsigned mask = 0;
      haddr_t addr = HADDR_UNDEF;
      hsize_t size = 0;
      if (H5Dget_chunk_info_by_coord(f.features.get(), offset.data(), &mask, &addr, &size) < 0 || mask != 0 ||
          addr == HADDR_UNDEF || size != chunkBytes) {
        return HADDR_UNDEF;
      }
      if (firstChunk == HADDR_UNDEF) firstChunk = addr;
      if (addr != firstChunk + static_cast<haddr_t>(k - row / c) * chunkBytes) return HADDR_UNDEF;
    }
    start = firstChunk + static_cast<haddr_t>(row % c) * rowBytes();
  }
  // Rows that do not start at a multiple of their element size are read, not mapped: the
  // converters load them as float / double.
  if (start % static_cast<haddr_t>(at::elementSize(type_)) != 0) return HADDR_UNDEF;
  return start;
}

MappedRows SplitSource::map(int64_t first, int64_t count) const {
  const haddr_t start = rowsStart(first, count);
  if (start == HADDR_UNDEF) return {};
  const File& f = *files_[fileOf(first)];
  const size_t bytes = static_cast<size_t>(count) * rowBytes();
  // A file that changed since it was opened is an error here, before its rows are mapped
  // (past a new end they would raise SIGBUS). Rows a corrupt chunk index places past the
  // end are left to read(), which names the problem.
  f.requireUnchanged();
  if (static_cast<haddr_t>(f.opened.size) < start + bytes) return {};
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t aligned = static_cast<size_t>(start) / page * page;
  const size_t lead = static_cast<size_t>(start) - aligned;
  void* base = ::mmap(nullptr, lead + bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, f.fd, static_cast<off_t>(aligned));
  if (base == MAP_FAILED) return {};
  return MappedRows(base, lead + bytes, static_cast<const char*>(base) + lead);
}

void SplitSource::willNeed(int64_t first, int64_t count) const {
  const haddr_t start = rowsStart(first, count);
  if (start == HADDR_UNDEF) return;
  ::posix_fadvise(files_[fileOf(first)]->fd, static_cast<off_t>(start),
                  static_cast<off_t>(count * static_cast<int64_t>(rowBytes())), POSIX_FADV_WILLNEED);
}

void SplitSource::read(int64_t first, int64_t count, void* out) const {
  const File& f = *files_[fileOf(first)];
  FORGE_CHECK_T(DataError, first - f.firstGlobal + count <= f.rows, "read of samples ", first, "..", first + count,
                " crosses the end of '", f.path, "'");
  try {
    readRowsOf(f, first - f.firstGlobal, count, static_cast<char*>(out));
  } catch (const DataError& e) {
    f.requireUnchanged();  // a file changed under the run is the cause to report
    throw DataError(concat(datasetWhere(f.path, featuresName_), e.what()));
  }
  // HDF5 reads past the end of a file as zeros, without an error: a file cut short (or
  // rewritten) while the rows were read is found by its size and modification time after
  // the read. One fstat per run of rows, on the path that copies them.
  f.requireUnchanged();
}

void SplitSource::readRowsOf(const File& f, int64_t row, int64_t count, char* dst) const {
  hid_t mem = nativeType(type_);
  Hdf5Lock lock;
  const int64_t end = row + count;
  if (f.rawChunks) {
    // Whole chunks inside the range go straight in; the rest (a partial first or last
    // chunk, the dataset's last chunk) through the normal read.
    const int64_t c = static_cast<int64_t>(f.chunkRows);
    const int64_t headEnd = std::min(end, (row + c - 1) / c * c);
    if (headEnd > row) {
      readRows(f.features.get(), mem, static_cast<hsize_t>(row), static_cast<hsize_t>(headEnd - row), dst);
      dst += (headEnd - row) * rowBytes();
      row = headEnd;
    }
    std::vector<hsize_t> offset(sampleShape_.size() + 1, 0);
    while (row + c <= end && row + c <= f.rows) {
      offset[0] = static_cast<hsize_t>(row);
      uint32_t filters = 0;
      FORGE_H5_CHECK(H5Dread_chunk(f.features.get(), H5P_DEFAULT, offset.data(), &filters, dst),
                     "cannot read the chunk at row ", row);
      dst += c * rowBytes();
      row += c;
    }
  }
  if (end > row) readRows(f.features.get(), mem, static_cast<hsize_t>(row), static_cast<hsize_t>(end - row), dst);
}

int SplitSource::files() const { return static_cast<int>(files_.size()); }

const std::string& SplitSource::path(int file) const { return files_[file]->path; }

std::string SplitSource::changeOf(int file) const {
  const File& f = *files_[file];
  return FileState::changeOf(f.opened, f.hdf5Fd, f.path);
}

FeatureSums featureSums(const SplitSource& source, int64_t first, int64_t count, double scale) {
  FeatureSums s;
  s.sum = at::zeros({source.rowElements()}, at::kDouble);
  s.sumSq = at::zeros({source.rowElements()}, at::kDouble);
  s.count = count;
  const int64_t per = std::max<int64_t>(1, static_cast<int64_t>((8u << 20) / std::max<size_t>(1, source.rowBytes())));
  int64_t pos = first;
  const int64_t end = first + count;
  while (pos < end) {
    int64_t n = std::min({per, end - pos, source.fileEnd(source.fileOf(pos)) - pos});
    at::Tensor raw = at::empty({n, source.rowElements()}, source.featureType());
    source.read(pos, n, raw.data_ptr());
    at::Tensor x = raw.to(at::kDouble);
    if (scale != 1.0) x.mul_(scale);
    s.sum += x.sum(0);
    s.sumSq += (x * x).sum(0);
    pos += n;
  }
  return s;
}

std::optional<double> SplitSource::attribute(const std::string& name) const {
  if (files_.size() != 1) return std::nullopt;
  Hdf5Lock lock;
  H5Id group(H5Gopen2(files_[0]->file.get(), split_.c_str(), H5P_DEFAULT));
  if (!group.valid()) return std::nullopt;
  return readDoubleAttribute(group.get(), name);
}

std::vector<int64_t> SplitSource::targetShape() const {
  if (targets_ == Targets::kNextTokens) return {sampleShape_[0] - 1};
  return labels_.sizes().slice(1).vec();
}

std::vector<int64_t> SplitSource::inputShape() const {
  if (targets_ == Targets::kNextTokens) return {sampleShape_[0] - 1};
  return sampleShape_;
}

TokenRange tokenRange(const SplitSource& source, int64_t first, int64_t count) {
  TokenRange r;
  const int64_t per = std::max<int64_t>(1, static_cast<int64_t>((8u << 20) / std::max<size_t>(1, source.rowBytes())));
  const int64_t end = first + count;
  for (int64_t pos = first; pos < end;) {
    const int64_t n = std::min({per, end - pos, source.fileEnd(source.fileOf(pos)) - pos});
    at::Tensor raw = at::empty({n, source.rowElements()}, source.featureType());
    source.read(pos, n, raw.data_ptr());
    at::Tensor ids = raw.to(at::kLong);
    auto [lo, loAt] = ids.amin(1).min(0);
    auto [hi, hiAt] = ids.amax(1).max(0);
    if (lo.item<int64_t>() < r.min) {
      r.min = lo.item<int64_t>();
      r.sampleOfMin = pos + loAt.item<int64_t>();
    }
    if (hi.item<int64_t>() > r.max) {
      r.max = hi.item<int64_t>();
      r.sampleOfMax = pos + hiAt.item<int64_t>();
    }
    pos += n;
  }
  return r;
}

void writeFeatureStats(const std::string& path, const std::vector<double>& mean, const std::vector<double>& std) {
  Hdf5Lock lock;
  const std::string tmp = path + ".tmp";
  {
    H5Id file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    FORGE_H5_CHECK(file.get(), "cannot create '", tmp, "'");
    std::vector<hsize_t> dims{mean.size()};
    writeDataset(file.get(), "mean", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, dims, mean.size(), mean.data());
    writeDataset(file.get(), "std", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, dims, std.size(), std.data());
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw DataError(concat("cannot rename '", tmp, "' to '", path, "'"));
}

void readFeatureStats(const std::string& path, std::vector<double>& mean, std::vector<double>& std) {
  Hdf5Lock lock;
  H5Id file = openFileReadOnly(path);
  for (auto [name, out] : {std::pair<const char*, std::vector<double>*>{"mean", &mean}, {"std", &std}}) {
    H5Id ds = openDataset(file.get(), path, name);
    H5DatasetInfo info = datasetInfo(ds.get());
    FORGE_CHECK_T(DataError, info.dims.size() == 1, path, ": '", name, "' must be one-dimensional");
    out->resize(info.dims[0]);
    readRows(ds.get(), H5T_NATIVE_DOUBLE, 0, info.dims[0], out->data());
  }
}

}  // namespace forge::data
