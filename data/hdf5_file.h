// RAII ownership of HDF5 ids and the few HDF5 operations forge needs. HDF5's own error
// printing is switched off; failures become DataError naming the file and the object.
#pragma once

#include <hdf5.h>

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"

namespace forge::data {

// Owns one HDF5 id of any kind (file, group, dataset, dataspace, type, property list).
class H5Id {
 public:
  H5Id() = default;
  explicit H5Id(hid_t id) : id_(id) {}
  ~H5Id() { reset(); }
  H5Id(H5Id&& other) noexcept : id_(other.id_) { other.id_ = H5I_INVALID_HID; }
  H5Id& operator=(H5Id&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = other.id_;
      other.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() noexcept {
    if (id_ >= 0) H5Idec_ref(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// What a dataset holds: element class and size, and its shape.
struct H5DatasetInfo {
  H5T_class_t typeClass = H5T_NO_CLASS;
  size_t typeSize = 0;
  bool isSigned = false;
  std::vector<hsize_t> dims;
  std::string typeName() const;  // "uint8", "float32", ...
};

// Turns off HDF5's automatic error-stack printing for the calling thread (idempotent). The
// HDF5 library Debian ships is built thread-safe, and there each thread has an error stack
// of its own that prints by default: a thread that calls HDF5 must silence it itself, or
// a failed read on the loader's thread dumps HDF5's stack on the user. Hdf5Lock does it.
void silenceHdf5Errors();

// The innermost message on the calling thread's HDF5 error stack (what failed, e.g.
// "required filter 'lzf' is not registered"), or "" when the stack is empty: one line for
// an error message instead of HDF5's dump.
std::string hdf5ErrorText();

// Opens a file read-only; DataError "cannot open HDF5 file '<path>': ..." otherwise.
H5Id openFileReadOnly(const std::string& path);
bool objectExists(hid_t file, const std::string& path);
H5Id openDataset(hid_t file, const std::string& filePath, const std::string& name);
H5DatasetInfo datasetInfo(hid_t dataset);

// Reads rows [first, first + count) of a dataset whose leading dimension is rows, converting
// to `memType` (e.g. H5T_NATIVE_UINT8) into `out` (must hold count * rowElements values).
void readRows(hid_t dataset, hid_t memType, hsize_t first, hsize_t count, void* out);

// Rows per chunk of a chunked dataset (the leading dimension of its chunk); 0 if contiguous.
hsize_t chunkRows(hid_t dataset);

// The number of chunks a chunked dataset has stored (its chunk index's entries); -1 when
// the index cannot be read.
int64_t storedChunks(hid_t dataset);

// Rows per chunk for streaming: about 1 MiB per chunk, which reads efficiently and fits
// HDF5's default chunk cache.
hsize_t streamingChunkRows(size_t bytesPerRow);

// forge's HDF5 calls are serialized (the thread-safe build serializes them anyway, and a
// build without thread safety needs it): every HDF5 call that may run on a background
// thread (the loader's reader) holds this lock, taken through Hdf5Lock.
std::mutex& hdf5Mutex();

// Holds hdf5Mutex() and makes sure the calling thread's HDF5 error printing is off.
class Hdf5Lock {
 public:
  Hdf5Lock() : lock_(hdf5Mutex()) { silenceHdf5Errors(); }

 private:
  std::lock_guard<std::mutex> lock_;
};

// A chunked dataset of `dims` created empty, to be filled row block by row block with
// writeRows (so that converters stream instead of holding a whole split in memory).
H5Id createRowsDataset(hid_t file, const std::string& name, hid_t fileType, const std::vector<hsize_t>& dims,
                       hsize_t chunkRows);
void writeRows(hid_t dataset, hid_t memType, hsize_t first, hsize_t count, const void* data);

// Writes a chunked dataset `name` (may contain '/', groups must exist) with the given
// file type, from `data` in `memType`. Chunks hold `chunkRows` rows.
void writeDataset(hid_t file, const std::string& name, hid_t fileType, hid_t memType,
                  const std::vector<hsize_t>& dims, hsize_t chunkRows, const void* data);
H5Id createGroup(hid_t file, const std::string& name);

// A float64 scalar attribute of an object (a group, a dataset): written, and read (nullopt
// when the object has none by that name).
void writeDoubleAttribute(hid_t object, const std::string& name, double value);
std::optional<double> readDoubleAttribute(hid_t object, const std::string& name);

}  // namespace forge::data

// HDF5's own reason (the innermost message of its error stack) is read before anything
// else may call HDF5 and clear it.
#define FORGE_H5_CHECK(call, ...)                                                                   \
  do {                                                                                              \
    if ((call) < 0) {                                                                               \
      const std::string forgeH5Why = ::forge::data::hdf5ErrorText();                                \
      throw ::forge::DataError(::forge::concat(::forge::concat(__VA_ARGS__),                        \
                                               forgeH5Why.empty() ? "" : " (HDF5: " + forgeH5Why + ")", \
                                               " (HDF5 call ", #call, " failed at ", __FILE__, ":", __LINE__, ")")); \
    }                                                                                               \
  } while (0)
