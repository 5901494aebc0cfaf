#include "data/dataset_checks.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/strings.h"

namespace forge::data {
namespace {

constexpr uint64_t kSaturated = std::numeric_limits<uint64_t>::max();

uint64_t times(uint64_t a, uint64_t b) {
  uint64_t out;
  return __builtin_mul_overflow(a, b, &out) ? kSaturated : out;
}

std::string where(const std::string& path, const std::string& name) {
  return concat("data file '", path, "', dataset '", name, "': ");
}

// "1,000,000,000,000", or "more than 2^64" for a count that overflowed.
std::string countText(uint64_t n) {
  return n == kSaturated ? std::string("more than 2^64") : withThousands(static_cast<long long>(n));
}

// A string property of a dataset's creation list read by an HDF5 getter that returns its
// length when given no buffer.
template <typename Getter>
std::string property(Getter get) {
  ssize_t n = get(nullptr, 0);
  if (n < 0) return "";
  std::vector<char> buf(static_cast<size_t>(n) + 1, '\0');
  get(buf.data(), buf.size());
  return std::string(buf.data());
}

void checkFilters(hid_t dcpl, const std::string& path, const std::string& name) {
  const int n = H5Pget_nfilters(dcpl);
  if (n < 0) throw DataError(where(path, name) + "cannot read its filter pipeline (a corrupt header)");
  for (int i = 0; i < n; ++i) {
    unsigned flags = 0, config = 0;
    size_t values = 0;
    char filterName[256] = {};
    const H5Z_filter_t id =
        H5Pget_filter2(dcpl, static_cast<unsigned>(i), &flags, &values, nullptr, sizeof filterName, filterName, &config);
    if (id < 0) throw DataError(where(path, name) + "cannot read its filter pipeline (a corrupt header)");
    unsigned info = 0;
    const bool decodes =
        H5Zfilter_avail(id) > 0 && H5Zget_filter_info(id, &info) >= 0 && (info & H5Z_FILTER_CONFIG_DECODE_ENABLED);
    if (decodes) continue;
    const std::string filter = filterName[0] != '\0' ? concat("'", filterName, "' (filter id ", id, ")")
                                                      : concat("id ", id);
    throw DataError(where(path, name) +
                    concat("its chunks are stored through HDF5 filter ", filter,
                           ", which this HDF5 library cannot decode: rewrite the file without it (e.g. h5py's "
                           "compression='gzip', or `h5repack -f NONE`), or make the filter's plugin available "
                           "(HDF5_PLUGIN_PATH)"));
  }
}

bool isFile(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Where HDF5 finds a virtual dataset's source file `source` named in the file at `path`, in
// HDF5's own order (H5F_prefix_open_file): an absolute name as it is, then its last
// component under each folder of HDF5_VDS_PREFIX, beside the virtual file, from the folder
// forge runs in, and beside the virtual file's resolved path. "" when none exists.
std::string findSource(const std::string& path, const std::string& source) {
  namespace fs = std::filesystem;
  if (!source.empty() && source[0] == '/' && isFile(source)) return source;
  const std::string name = source[0] == '/' ? fs::path(source).filename().string() : source;
  const std::string origin = fs::path(path).parent_path().string();
  std::vector<std::string> candidates;
  if (const char* prefixes = std::getenv("HDF5_VDS_PREFIX")) {
    std::string all = prefixes;
    for (size_t pos = 0; pos <= all.size();) {
      size_t end = all.find(':', pos);
      if (end == std::string::npos) end = all.size();
      std::string prefix = all.substr(pos, end - pos);
      if (prefix.rfind("${ORIGIN}", 0) == 0) prefix = (origin.empty() ? "." : origin) + prefix.substr(9);
      if (!prefix.empty()) candidates.push_back(prefix + "/" + name);
      pos = end + 1;
    }
  }
  candidates.push_back((origin.empty() ? std::string(".") : origin) + "/" + name);
  candidates.push_back(name);
  std::error_code ec;
  const fs::path resolved = fs::canonical(path, ec);
  if (!ec) candidates.push_back((resolved.parent_path() / name).string());
  for (const auto& c : candidates) {
    if (isFile(c)) return c;
  }
  return "";
}

void checkVirtualSources(hid_t file, hid_t dcpl, const std::string& path, const std::string& name) {
  size_t mappings = 0;
  if (H5Pget_virtual_count(dcpl, &mappings) < 0) {
    throw DataError(where(path, name) + "cannot read its virtual dataset mappings (a corrupt header)");
  }
  for (size_t i = 0; i < mappings; ++i) {
    const std::string source =
        property([&](char* buf, size_t size) { return H5Pget_virtual_filename(dcpl, i, buf, size); });
    const std::string dataset =
        property([&](char* buf, size_t size) { return H5Pget_virtual_dsetname(dcpl, i, buf, size); });
    // A printf-style name (%b) maps an unlimited series of files, which may grow: HDF5
    // takes those that exist as they appear.
    if (source.find('%') != std::string::npos || dataset.find('%') != std::string::npos) continue;
    const std::string what = concat("it is a virtual dataset, and the source of its mapping ", i + 1, " of ", mappings);
    const std::string missing = "; HDF5 would read those rows as fill values (zeros)";
    if (source.empty() || source == ".") {
      if (!objectExists(file, dataset)) {
        throw DataError(where(path, name) + concat(what, ", dataset '", dataset, "' of this file, does not exist",
                                                   missing));
      }
      continue;
    }
    const std::string found = findSource(path, source);
    if (found.empty()) {
      throw DataError(where(path, name) +
                      concat(what, ", file '", source, "', does not exist (looked for it beside '", path,
                             "', from the folder forge runs in and under HDF5_VDS_PREFIX)", missing,
                             ". Put the file back, or set HDF5_VDS_PREFIX to its folder"));
    }
    H5Id src(H5Fopen(found.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    if (!src.valid()) {
      throw DataError(where(path, name) + concat(what, ", file '", found, "', is not a readable HDF5 file", missing));
    }
    if (!objectExists(src.get(), dataset)) {
      throw DataError(where(path, name) +
                      concat(what, ", dataset '", dataset, "' of file '", found, "', does not exist", missing));
    }
  }
}

// Chunks or contiguous storage never written, without a fill value of the dataset's own;
// and an extent the file cannot hold.
void checkStorage(hid_t dataset, hid_t dcpl, H5D_layout_t layout, const H5DatasetInfo& info,
                  const std::string& path, const std::string& name, uint64_t fileBytes) {
  uint64_t elements = 1;
  for (hsize_t d : info.dims) elements = times(elements, d);
  if (elements == 0) return;
  const uint64_t bytes = times(elements, info.typeSize);
  H5D_fill_value_t fill = H5D_FILL_VALUE_UNDEFINED;
  const bool ownFill = H5Pfill_value_defined(dcpl, &fill) >= 0 && fill == H5D_FILL_VALUE_USER_DEFINED;
  const bool filtered = H5Pget_nfilters(dcpl) > 0;
  const uint64_t rows = info.dims.empty() ? 1 : info.dims[0];
  auto tooLarge = [&](const std::string& needs) {
    return DataError(where(path, name) +
                     concat("it declares ", countText(rows), " rows (", dimsText(std::vector<int64_t>(
                                                                        info.dims.begin(), info.dims.end())),
                            "), which need ", needs, ", but the file holds ", withThousands(fileBytes),
                            " bytes: its header is corrupt, or the file was cut short"));
  };
  const bool external = H5Pget_external_count(dcpl) > 0;  // the values live in other files
  if (layout == H5D_CHUNKED) {
    std::vector<hsize_t> chunk(info.dims.size());
    if (H5Pget_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()) != static_cast<int>(chunk.size())) {
      throw DataError(where(path, name) + "cannot read its chunk shape (a corrupt header)");
    }
    uint64_t expected = 1;
    for (size_t d = 0; d < chunk.size(); ++d) {
      if (chunk[d] == 0) throw DataError(where(path, name) + "its chunk shape has a zero dimension (a corrupt header)");
      expected = times(expected, (info.dims[d] + chunk[d] - 1) / chunk[d]);
    }
    if (!ownFill) {
      // Every chunk must be stored, each in at least a byte of the file (all of its bytes
      // when unfiltered).
      if (expected > fileBytes) throw tooLarge(concat(countText(expected), " chunks"));
      if (!filtered && bytes > fileBytes) throw tooLarge(concat(countText(bytes), " bytes"));
    }
    const int64_t stored = storedChunks(dataset);
    if (stored < 0) throw DataError(where(path, name) + "cannot read its chunk index (a corrupt file)");
    if (static_cast<uint64_t>(stored) < expected && !ownFill) {
      throw DataError(where(path, name) +
                      concat(countText(expected - static_cast<uint64_t>(stored)), " of its ", countText(expected),
                             " chunks were never written, and it has no fill value of its own: HDF5 would read "
                             "their rows as zeros. Write every row (or give the dataset a fill value when you "
                             "create it, if the missing rows are meant to hold it)"));
    }
  } else if (layout == H5D_CONTIGUOUS && !external) {
    H5D_space_status_t status = H5D_SPACE_STATUS_ERROR;
    if (H5Dget_space_status(dataset, &status) < 0) {
      throw DataError(where(path, name) + "cannot read whether its storage exists (a corrupt header)");
    }
    if (status != H5D_SPACE_STATUS_ALLOCATED && !ownFill) {
      throw DataError(where(path, name) +
                      "its values were never written, and it has no fill value of its own: HDF5 would read them "
                      "as zeros");
    }
    if (status == H5D_SPACE_STATUS_ALLOCATED && bytes > fileBytes) throw tooLarge(concat(countText(bytes), " bytes"));
  }
}

}  // namespace

void checkStoredValues(hid_t file, hid_t dataset, const H5DatasetInfo& info, const std::string& path,
                       const std::string& name, uint64_t fileBytes) {
  H5Id dcpl(H5Dget_create_plist(dataset));
  if (!dcpl.valid()) throw DataError(where(path, name) + "cannot read how it is stored (a corrupt header)");
  const H5D_layout_t layout = H5Pget_layout(dcpl.get());
  if (layout < 0) throw DataError(where(path, name) + "cannot read its storage layout (a corrupt header)");
  checkFilters(dcpl.get(), path, name);
  if (layout == H5D_VIRTUAL) {
    checkVirtualSources(file, dcpl.get(), path, name);
    return;
  }
  checkStorage(dataset, dcpl.get(), layout, info, path, name, fileBytes);
}

}  // namespace forge::data
