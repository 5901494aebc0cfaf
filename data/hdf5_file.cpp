#include "data/hdf5_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

namespace forge::data {

std::string H5DatasetInfo::typeName() const {
  if (typeClass == H5T_INTEGER) return concat(isSigned ? "int" : "uint", typeSize * 8);
  if (typeClass == H5T_FLOAT) return concat("float", typeSize * 8);
  if (typeClass == H5T_STRING) return "string";
  if (typeClass == H5T_ENUM) return "enum (h5py stores bool so)";
  if (typeClass == H5T_COMPOUND) return "compound";
  return "an HDF5 type of another class";
}

void silenceHdf5Errors() {
  thread_local bool silenced = false;
  if (silenced) return;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  silenced = true;
}

std::string hdf5ErrorText() {
  std::string text;
  // Upward: the first entry is where the failure was found, the last the API call.
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD,
           [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
             if (n == 0 && e->desc != nullptr) *static_cast<std::string*>(out) = e->desc;
             return 0;
           },
           &text);
  return text;
}

H5Id openFileReadOnly(const std::string& path) {
  silenceHdf5Errors();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    std::string where;
    if (!path.empty() && path[0] != '/') {  // relative paths are taken from where forge runs
      std::error_code ec;
      where = concat(" in ", std::filesystem::current_path(ec).string());
    }
    throw DataError(concat("cannot open data file '", path, "'", where, ": ", std::strerror(errno), " (",
                           where.empty() ? "" : "a relative data.path is read from the folder forge runs in; ",
                           "create it with 'forge data fashion-mnist --out ", path,
                           "' or another converter of `forge data --help`, or set data.path)"));
  }
  if (!S_ISREG(st.st_mode)) {
    // A FIFO would block the open for good (no signal reaches a training loop yet), a
    // directory or device gives HDF5's low-level dump.
    throw DataError(concat("cannot open data file '", path, "': not a regular file (",
                           S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a device or socket",
                           "); data.path names HDF5 files"));
  }
  // Read-only and without HDF5's file locks, as HDF5_USE_FILE_LOCKING=FALSE would: NFS and
  // Lustre mounts often refuse the locks, and a reader needs none (a file that changes
  // under a run is caught by trainer/engine/data_watch.h instead).
  H5Id fapl(H5Pcreate(H5P_FILE_ACCESS));
#if H5_VERSION_GE(1, 10, 7)
  H5Pset_file_locking(fapl.get(), false, true);
#endif
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (id < 0) {
    const std::string why = hdf5ErrorText();
    throw DataError(concat("cannot open data file '", path, "': not a readable HDF5 file",
                           why.empty() ? "" : concat(" (HDF5: ", why, ")")));
  }
  return H5Id(id);
}

bool objectExists(hid_t file, const std::string& path) {
  // H5Lexists needs every intermediate link to exist; walk the path.
  std::string prefix;
  size_t pos = 0;
  while (pos != std::string::npos) {
    size_t next = path.find('/', pos);
    prefix = path.substr(0, next);
    if (!prefix.empty() && H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    pos = next == std::string::npos ? next : next + 1;
  }
  return true;
}

H5Id openDataset(hid_t file, const std::string& filePath, const std::string& name) {
  if (!objectExists(file, name)) {
    throw DataError(concat("data file '", filePath, "' has no dataset '", name, "'"));
  }
  // No chunk cache: forge reads whole chunks once each, straight into its own buffers, so a
  // cache would only add a copy (and chunks of ~1 MiB do not fit HDF5's default 1 MiB one).
  H5Id dapl(H5Pcreate(H5P_DATASET_ACCESS));
  if (dapl.valid()) H5Pset_chunk_cache(dapl.get(), H5D_CHUNK_CACHE_NSLOTS_DEFAULT, 0, H5D_CHUNK_CACHE_W0_DEFAULT);
  hid_t id = H5Dopen2(file, name.c_str(), dapl.valid() ? dapl.get() : H5P_DEFAULT);
  if (id < 0) {
    // Not a dataset (a group), or one whose header HDF5 cannot read (a corrupt file).
    const std::string why = hdf5ErrorText();
    throw DataError(concat("data file '", filePath, "': cannot open '", name, "' as a dataset",
                           why.empty() ? "" : concat(" (HDF5: ", why, ")")));
  }
  return H5Id(id);
}

H5DatasetInfo datasetInfo(hid_t dataset) {
  H5DatasetInfo info;
  H5Id type(H5Dget_type(dataset));
  FORGE_H5_CHECK(type.get(), "cannot read the element type of a dataset");
  info.typeClass = H5Tget_class(type.get());
  info.typeSize = H5Tget_size(type.get());
  if (info.typeClass == H5T_INTEGER) info.isSigned = H5Tget_sign(type.get()) == H5T_SGN_2;
  H5Id space(H5Dget_space(dataset));
  FORGE_H5_CHECK(space.get(), "cannot read the shape of a dataset");
  int rank = H5Sget_simple_extent_ndims(space.get());
  FORGE_H5_CHECK(rank, "cannot read the rank of a dataset");
  info.dims.resize(rank);
  if (rank > 0) FORGE_H5_CHECK(H5Sget_simple_extent_dims(space.get(), info.dims.data(), nullptr), "bad dataspace");
  return info;
}

namespace {

// Rows [first, first + count) of a dataset whose leading dimension is rows: the selection
// in the file and the matching memory space.
std::pair<H5Id, H5Id> rowSelection(hid_t dataset, hsize_t first, hsize_t count) {
  H5Id fileSpace(H5Dget_space(dataset));
  FORGE_H5_CHECK(fileSpace.get(), "cannot read dataspace");
  int rank = H5Sget_simple_extent_ndims(fileSpace.get());
  std::vector<hsize_t> start(rank, 0), counts(rank);
  H5Sget_simple_extent_dims(fileSpace.get(), counts.data(), nullptr);
  start[0] = first;
  counts[0] = count;
  FORGE_H5_CHECK(H5Sselect_hyperslab(fileSpace.get(), H5S_SELECT_SET, start.data(), nullptr, counts.data(), nullptr),
                 "cannot select rows ", first, "..", first + count);
  H5Id memSpace(H5Screate_simple(rank, counts.data(), nullptr));
  return {std::move(fileSpace), std::move(memSpace)};
}

}  // namespace

void readRows(hid_t dataset, hid_t memType, hsize_t first, hsize_t count, void* out) {
  auto [fileSpace, memSpace] = rowSelection(dataset, first, count);
  FORGE_H5_CHECK(H5Dread(dataset, memType, memSpace.get(), fileSpace.get(), H5P_DEFAULT, out), "cannot read rows ",
                 first, "..", first + count);
}

hsize_t chunkRows(hid_t dataset) {
  H5Id dcpl(H5Dget_create_plist(dataset));
  if (!dcpl.valid() || H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return 0;
  int rank = H5Pget_chunk(dcpl.get(), 0, nullptr);
  if (rank <= 0) return 0;
  std::vector<hsize_t> dims(rank);
  H5Pget_chunk(dcpl.get(), rank, dims.data());
  return dims[0];
}

int64_t storedChunks(hid_t dataset) {
  hsize_t stored = 0;
  H5Id space(H5Dget_space(dataset));  // this HDF5 (1.10) takes no H5S_ALL here
  if (!space.valid() || H5Dget_num_chunks(dataset, space.get(), &stored) < 0) return -1;
  return static_cast<int64_t>(stored);
}

hsize_t streamingChunkRows(size_t bytesPerRow) {
  return std::max<hsize_t>(1, (1u << 20) / std::max<size_t>(1, bytesPerRow));
}

std::mutex& hdf5Mutex() {
  static std::mutex m;
  return m;
}

H5Id createRowsDataset(hid_t file, const std::string& name, hid_t fileType, const std::vector<hsize_t>& dims,
                       hsize_t rowsPerChunk) {
  H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  FORGE_H5_CHECK(space.get(), "cannot create dataspace for '", name, "'");
  H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
  std::vector<hsize_t> chunk = dims;
  chunk[0] = std::max<hsize_t>(1, std::min<hsize_t>(rowsPerChunk, dims[0]));
  if (dims[0] > 0) FORGE_H5_CHECK(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), "chunking");
  H5Id ds(H5Dcreate2(file, name.c_str(), fileType, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
  FORGE_H5_CHECK(ds.get(), "cannot create dataset '", name, "'");
  return ds;
}

void writeRows(hid_t dataset, hid_t memType, hsize_t first, hsize_t count, const void* data) {
  if (count == 0) return;
  auto [fileSpace, memSpace] = rowSelection(dataset, first, count);
  FORGE_H5_CHECK(H5Dwrite(dataset, memType, memSpace.get(), fileSpace.get(), H5P_DEFAULT, data), "cannot write rows ",
                 first, "..", first + count, " (disk full?)");
}

H5Id createGroup(hid_t file, const std::string& name) {
  hid_t id = H5Gcreate2(file, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  FORGE_H5_CHECK(id, "cannot create group '", name, "'");
  return H5Id(id);
}

void writeDoubleAttribute(hid_t object, const std::string& name, double value) {
  H5Id space(H5Screate(H5S_SCALAR));
  H5Id attr(H5Acreate2(object, name.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  FORGE_H5_CHECK(attr.get(), "cannot create attribute '", name, "'");
  FORGE_H5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_DOUBLE, &value), "cannot write attribute '", name, "'");
}

std::optional<double> readDoubleAttribute(hid_t object, const std::string& name) {
  if (H5Aexists(object, name.c_str()) <= 0) return std::nullopt;
  H5Id attr(H5Aopen(object, name.c_str(), H5P_DEFAULT));
  double value = 0;
  if (!attr.valid() || H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value) < 0) return std::nullopt;
  return value;
}

void writeDataset(hid_t file, const std::string& name, hid_t fileType, hid_t memType,
                  const std::vector<hsize_t>& dims, hsize_t chunkRows, const void* data) {
  H5Id ds = createRowsDataset(file, name, fileType, dims, chunkRows);
  if (dims[0] > 0) FORGE_H5_CHECK(H5Dwrite(ds.get(), memType, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "cannot write '", name, "'");
}

}  // namespace forge::data
